"""The Python SDK off WebAssembly: host calls served by weir_sdk.testing.

Run: PYTHONPATH=sdk/python python3 -m unittest discover -s sdk/python/tests
(the integration suite does, see tests/integration/languages.rs)."""

import unittest

import weir_sdk as weir
from weir_sdk import testing


class EventTest(unittest.TestCase):
    def test_headers_are_case_insensitive_and_ordered(self):
        e = weir.Event("a", b"x", headers=[("Fail-Times", "2"), ("fail-times", "3"), ("o", "1")])
        self.assertEqual(e.header("FAIL-TIMES"), "2")
        self.assertEqual(e.header_all("fail-times"), ["2", "3"])
        self.assertIsNone(e.header("missing"))

    def test_json_is_strict_and_failures_are_rejects(self):
        self.assertEqual(weir.Event("a", b'{"n": 2.5}').json(), {"n": 2.5})
        for bad in [b"{", b"NaN", b"[1e400]", b"\xff"]:
            with self.assertRaises(weir.Reject, msg=bad) as caught:
                weir.Event("a", bad).json()
            self.assertIn("invalid JSON payload", caught.exception.message)
        with self.assertRaises(weir.Reject):
            weir.Event("a", b"\xff").text()

    def test_reply_and_to_message(self):
        self.assertIsNone(weir.Event("a", "x").reply("y"))
        e = weir.Event("a", "x", headers=[("h", "v")], reply_to="_INBOX.1")
        self.assertEqual(e.reply("y"), weir.Message("_INBOX.1", b"y"))
        self.assertEqual(e.to_message("b"), weir.Message("b", b"x", [("h", "v")]))


class MessageTest(unittest.TestCase):
    def test_json_is_compact_and_headers_append(self):
        m = weir.Message.json("s", {"a": [1, 2.0], "é": None}).header("k", "v").header("k", "w")
        self.assertEqual(m.payload, '{"a":[1,2.0],"é":null}'.encode())
        self.assertEqual(m.headers, [("k", "v"), ("k", "w")])

    def test_unencodable_values_are_rejects(self):
        with self.assertRaises(weir.Reject):
            weir.Message.json("s", {"x": float("nan")})
        with self.assertRaises(TypeError):
            weir.Message("s", 5)


class HostTest(unittest.TestCase):
    def setUp(self):
        testing.reset()

    def test_config_publish_and_logs_are_served_natively(self):
        testing.set_config("k", "v")
        self.assertEqual(weir.config("k"), "v")
        self.assertEqual(weir.config("missing", "d"), "d")
        weir.publish(weir.Message("s", b"p"))
        self.assertEqual(testing.take_published(), [weir.Message("s", b"p")])
        weir.info("hello")
        weir.error("oops")
        self.assertEqual(testing.take_logs(), [("info", "hello"), ("error", "oops")])
        with self.assertRaises(ValueError):
            weir.log("loud", "x")

    def test_rounding_is_rusts(self):
        self.assertEqual(weir.round_half_away(2.5), 3.0)
        self.assertEqual(weir.round_half_away(-2.5), -3.0)
        self.assertEqual(weir.round_half_away(0.49999999999999994), 0.0)
        self.assertEqual(weir.round_half_away(1.005 * 100) / 100, 1.0)
        self.assertEqual(weir.round_half_away(0.125, 2), 0.13)


if __name__ == "__main__":
    unittest.main()
