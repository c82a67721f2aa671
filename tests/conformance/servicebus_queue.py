"""Drive a queue of the fake Service Bus with azure-servicebus.

Sends a single message and a batch, peeks them, then settles one each way: complete,
abandon (and receive it again), dead-letter with a reason, renew its lock and defer it
(then receive it by sequence number and complete it). Schedules two messages and cancels
one, and reads the dead-letter queue. Prints a JSON summary; the Rust test checks the
queue in the model afterwards. Settings come from the environment (servicebus_common).
"""

import datetime
import json
import os

from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue

from servicebus_common import body_text, client

QUEUE = os.environ["XTENANT_SB_QUEUE"]
WAIT_SECONDS = 5


def receive_exactly(receiver, count):
    received = []
    for _ in range(10):
        if len(received) >= count:
            break
        received.extend(
            receiver.receive_messages(
                max_message_count=count - len(received), max_wait_time=WAIT_SECONDS
            )
        )
    assert len(received) == count, f"received {len(received)} of {count} messages"
    return received


def main():
    summary = {}
    with client() as service_bus:
        with service_bus.get_queue_sender(QUEUE) as sender:
            sender.send_messages(
                ServiceBusMessage("single", application_properties={"kind": "single"})
            )
            batch = sender.create_message_batch()
            for index in range(3):
                batch.add_message(ServiceBusMessage(f"batch-{index}"))
            sender.send_messages(batch)

        with service_bus.get_queue_receiver(QUEUE, max_wait_time=WAIT_SECONDS) as receiver:
            peeked = receiver.peek_messages(max_message_count=10)
            summary["peeked"] = [body_text(m) for m in peeked]
            summary["peeked_sequence_numbers"] = [m.sequence_number for m in peeked]

            completed, abandoned, dead_lettered, deferred = receive_exactly(receiver, 4)
            summary["received"] = [
                body_text(m) for m in (completed, abandoned, dead_lettered, deferred)
            ]
            summary["lock_token_length"] = len(str(completed.lock_token))
            summary["single_kind"] = completed.application_properties.get(b"kind", b"").decode()

            receiver.complete_message(completed)
            receiver.abandon_message(abandoned)
            receiver.dead_letter_message(
                dead_lettered, reason="bad-payload", error_description="could not parse"
            )

            old_lock = deferred.locked_until_utc
            new_lock = receiver.renew_message_lock(deferred)
            summary["lock_renewed"] = new_lock >= old_lock
            deferred_sequence = deferred.sequence_number
            receiver.defer_message(deferred)

            (again,) = receive_exactly(receiver, 1)
            summary["abandoned_again"] = body_text(again)
            summary["abandoned_delivery_count"] = again.delivery_count
            receiver.complete_message(again)

            (fetched,) = receiver.receive_deferred_messages([deferred_sequence])
            summary["deferred"] = body_text(fetched)
            receiver.complete_message(fetched)

        with service_bus.get_queue_sender(QUEUE) as sender:
            later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
            kept, cancelled = sender.schedule_messages(
                [ServiceBusMessage("scheduled-kept"), ServiceBusMessage("scheduled-cancelled")],
                later,
            )
            sender.cancel_scheduled_messages(cancelled)
            summary["scheduled_kept"] = kept
            summary["scheduled_cancelled"] = cancelled

        with service_bus.get_queue_receiver(
            QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=WAIT_SECONDS
        ) as dead_letters:
            (letter,) = receive_exactly(dead_letters, 1)
            summary["dead_letter_body"] = body_text(letter)
            summary["dead_letter_reason"] = letter.dead_letter_reason
            summary["dead_letter_description"] = letter.dead_letter_error_description
            # Abandoning keeps it in the dead-letter queue for the Rust test to find.
            dead_letters.abandon_message(letter)

    print(json.dumps(summary))


if __name__ == "__main__":
    main()
