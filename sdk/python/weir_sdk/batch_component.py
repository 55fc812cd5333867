"""The component entry point of a plugin whose ``app`` module defines
``handle_batch``: componentize-py builds this module against world
``handler-and-batch``. It exports ``handle-batch``, and ``handle`` as the
plugin's own ``handle`` when it has one, else as a batch of one. Plugin authors
never import it."""

import app  # the plugin's module: app.py beside plugin.toml

import weir_sdk

_batch = app.handle_batch
_handle = getattr(app, "handle", None)


class WitWorld:
    def handle(self, e):
        if _handle is not None:
            return weir_sdk._dispatch(_handle, e)
        return weir_sdk._dispatch_one(_batch, e)

    def handle_batch(self, events):
        return weir_sdk._dispatch_batch(_batch, events)
