"""Seeing a running flow: Prometheus metrics, health, the live terminal view and the final report.

* :mod:`edgeflow.observe.exporter`: ``/metrics``, ``/healthz`` and ``/readyz`` over HTTP
  (``prometheus-client``, imported only when metrics are served);
* :mod:`edgeflow.observe.health`: when a flow is ready, and when it is unhealthy;
* :mod:`edgeflow.observe.live`: the ``rich`` live panel of ``edgeflow run`` and its one-line form;
* :mod:`edgeflow.observe.report`: the final report as text and as strict JSON, merged across processes.

All of them read the run's :class:`~edgeflow.metrics.FlowStats`; none changes it.

>>> from edgeflow.observe.health import HealthConfig
>>> HealthConfig().uplink_down_s
60.0
"""

__all__: list[str] = []
