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


class BatchTest(unittest.TestCase):
    def setUp(self):
        testing.reset()

    def test_each_event_gets_its_own_outcome(self):
        def handle_batch(events):
            return [
                [e.to_message("seen")] if e.payload == b"ok" else
                weir.Retry("later") if e.payload == b"retry" else
                None if e.payload == b"none" else
                weir.Reject("no")
                for e in events
            ]

        events = [weir.Event("a", p) for p in (b"ok", b"retry", b"none", b"bad")]
        out = testing.run_batch(handle_batch, events)
        self.assertEqual(out[0], [weir.Message("seen", b"ok")])
        self.assertIsInstance(out[1], weir.Retry)
        self.assertEqual(out[2], [])
        self.assertIsInstance(out[3], weir.Reject)

    def test_publish_is_refused_inside_a_batch_only(self):
        def handle_batch(events):
            out = []
            for e in events:
                try:
                    weir.publish(e.to_message("x"))
                    out.append([])
                except weir.PublishError as err:
                    out.append(weir.Reject(str(err)))
            return out

        out = testing.run_batch(handle_batch, [weir.Event("a", b"1")])
        self.assertIn("handle-batch", out[0].message)
        self.assertEqual(testing.take_published(), [])
        weir.publish(weir.Message("y", b""))  # allowed again after the batch
        self.assertEqual(testing.take_published(), [weir.Message("y", b"")])

    def test_each_event_turns_raised_failures_into_outcomes(self):
        def greet(e):
            return [weir.Message("out", e.json()["name"])]

        out = testing.run_batch(
            lambda events: weir.each_event(events, greet),
            [weir.Event("a", b'{"name": "Ada"}'), weir.Event("a", b"not json")],
        )
        self.assertEqual(out[0], [weir.Message("out", b"Ada")])
        self.assertIsInstance(out[1], weir.Reject)
        with self.assertRaises(KeyError):  # any other exception fails the call
            testing.run_batch(lambda events: weir.each_event(events, greet), [weir.Event("a", b"{}")])

    def test_a_wrong_count_or_entry_type_is_named(self):
        with self.assertRaises(AssertionError) as caught:
            testing.run_batch(lambda events: events[:-1], [weir.Event("a"), weir.Event("b")])
        self.assertIn("1 results for 2 events", str(caught.exception))
        out = testing.run_batch(lambda events: [42], [weir.Event("a")])
        self.assertIsInstance(out[0], weir.Reject)
        self.assertIn("result 0 is a int", out[0].message)

    def test_the_batch_test_plugin(self):
        import importlib.util
        import os

        path = os.path.join(os.path.dirname(__file__), "../../../plugins/batch-python/app.py")
        spec = importlib.util.spec_from_file_location("batch_python_app", path)
        app = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(app)
        events = [
            weir.Event("batch.python.1", b"ok:1"),
            weir.Event("batch.python.2", b"retry:2"),
            weir.Event("batch.python.3", b"retry:3", attempt=2),
            weir.Event("batch.python.4", b"reject:4"),
        ]
        out = testing.run_batch(app.handle_batch, events)
        self.assertEqual(out[0], [weir.Message("batched.ok", b"ok:1", [("Batch-Attempt", "1")])])
        self.assertIsInstance(out[1], weir.Retry)
        self.assertEqual(out[2], [weir.Message("batched.ok", b"retry:3", [("Batch-Attempt", "2")])])
        self.assertIsInstance(out[3], weir.Reject)
        with self.assertRaises(RuntimeError):
            testing.run_batch(app.handle_batch, [weir.Event("a", b"trap:1")])
        with self.assertRaises(AssertionError):
            testing.run_batch(app.handle_batch, [weir.Event("a", b"short:1")])


if __name__ == "__main__":
    unittest.main()
