"""The component entry point: componentize-py builds this module, which exports
the world's ``handle`` and calls ``handle(event)`` of the plugin's ``app`` module.
Plugin authors never import it."""

import app  # the plugin's module: app.py beside plugin.toml

import weir_sdk

_handle = app.handle


class WitWorld:
    def handle(self, e):
        return weir_sdk._dispatch(_handle, e)
