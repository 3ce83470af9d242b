"""The edgevae edge agent: MQTT sensor streams in, ONNX Runtime scoring, alerts out. Never imports torch."""
