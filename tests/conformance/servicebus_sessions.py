"""Drive a session-enabled queue of the fake Service Bus with azure-servicebus.

Sends messages to sessions s1 and s2, accepts session s1, sets and reads its state,
renews its lock and completes its messages. Prints a JSON summary; the Rust test checks
that s2's message is still queued and s1's state is stored. Settings come from the
environment (servicebus_common).
"""

import json
import os

from azure.servicebus import ServiceBusMessage

from servicebus_common import body_text, client

QUEUE = os.environ["XTENANT_SB_SESSION_QUEUE"]
WAIT_SECONDS = 5


def main():
    summary = {}
    with client() as service_bus:
        with service_bus.get_queue_sender(QUEUE) as sender:
            sender.send_messages(
                [
                    ServiceBusMessage("s1-first", session_id="s1"),
                    ServiceBusMessage("s2-only", session_id="s2"),
                    ServiceBusMessage("s1-second", session_id="s1"),
                ]
            )

        with service_bus.get_queue_receiver(
            QUEUE, session_id="s1", max_wait_time=WAIT_SECONDS
        ) as receiver:
            session = receiver.session
            summary["session_id"] = session.session_id
            session.set_state("step-1")
            summary["state"] = session.get_state().decode()
            old_lock = session.locked_until_utc
            new_lock = session.renew_lock()
            summary["session_lock_renewed"] = old_lock is not None and new_lock >= old_lock

            received = []
            for _ in range(5):
                if len(received) >= 2:
                    break
                received.extend(receiver.receive_messages(max_message_count=2))
            summary["received"] = [body_text(m) for m in received]
            summary["session_ids"] = [m.session_id for m in received]
            for message in received:
                receiver.complete_message(message)

    print(json.dumps(summary))


if __name__ == "__main__":
    main()
