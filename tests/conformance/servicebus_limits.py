"""Check that azure-servicebus honours the fake broker's max message size.

Sends a message larger than the Standard tier's 256 KB and expects
MessageSizeExceededError. Prints a JSON summary. Settings come from the environment
(servicebus_common).
"""

import json
import os

from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import MessageSizeExceededError

from servicebus_common import client

QUEUE = os.environ["XTENANT_SB_QUEUE"]
OVERSIZED_BYTES = 300 * 1024


def main():
    summary = {"size_exceeded": False}
    with client() as service_bus:
        with service_bus.get_queue_sender(QUEUE) as sender:
            try:
                sender.send_messages(ServiceBusMessage(b"x" * OVERSIZED_BYTES))
            except MessageSizeExceededError as error:
                summary["size_exceeded"] = True
                summary["error"] = str(error)
            sender.send_messages(ServiceBusMessage("small"))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
