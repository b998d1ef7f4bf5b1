"""MQTT in and out."""

__all__: list[str] = []
