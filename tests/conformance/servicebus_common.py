"""Build a ServiceBusClient that reaches only the local fakes.

XTENANT_SB_NAMESPACE is the namespace's host name (used in the AMQP open frame and the
token audience), XTENANT_SB_ENDPOINT the local `sb://127.0.0.1:port` address the client
dials, and XTENANT_SB_TLS is `1` for the TLS endpoint (verified with XTENANT_CA_FILE) or
`0` for plain AMQP.
"""

import os

from azure.identity import WorkloadIdentityCredential
from azure.servicebus import ServiceBusClient, TransportType


def client():
    credential = WorkloadIdentityCredential()
    namespace = os.environ["XTENANT_SB_NAMESPACE"]
    endpoint = os.environ["XTENANT_SB_ENDPOINT"]
    settings = {
        "custom_endpoint_address": endpoint,
        # Without an explicit transport, a custom endpoint switches to WebSockets.
        "transport_type": TransportType.Amqp,
        "retry_total": 1,
    }
    if os.environ["XTENANT_SB_TLS"] == "1":
        settings["connection_verify"] = os.environ["XTENANT_CA_FILE"]
    else:
        # An undocumented keyword of azure-servicebus 7.15 that turns TLS off.
        settings["use_tls"] = False
    return ServiceBusClient(namespace, credential, **settings)


def body_text(message):
    return b"".join(message.body).decode()
