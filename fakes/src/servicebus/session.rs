//! A session and its links: attach, flow, transfer, disposition and detach, with the
//! session and link flow control of AMQP 1.0 part 2.

use std::collections::{BTreeMap, VecDeque};

use fe2o3_amqp_types::definitions::{
    AmqpError, DeliveryTag, Error as AmqpErrorBody, ErrorCondition, Handle, LinkError,
    ReceiverSettleMode, Role, SenderSettleMode, SessionError,
};
use fe2o3_amqp_types::messaging::{Accepted, DeliveryState, Rejected, Target};
use fe2o3_amqp_types::performatives::{
    Attach, Begin, Detach, Disposition, Flow, Performative, Transfer,
};
use fe2o3_amqp_types::primitives::Symbol;
use tracing::{Span, debug, debug_span};

use super::address::EntityAddress;
use super::cbs::{self, STATUS_ACCEPTED};
use super::codec;
use super::connection::{Connection, ConnectionFailure, Outbox};
use super::message::{self, lock_token_tag};
use crate::cloud::rbac::{SERVICEBUS_RECEIVE, SERVICEBUS_SEND};
use crate::cloud::{SharedCloud, lock};

/// Transfer frames the broker lets a client send before it widens the session window again.
const SESSION_WINDOW: u32 = 5000;
/// Outgoing window the broker announces; it sends no more than the client's incoming window.
const OUTGOING_WINDOW: u32 = 5000;
/// Highest link handle a client may use.
const HANDLE_MAX: u32 = 255;
/// Credit granted on links the client sends on, refilled when half of it is used.
const LINK_CREDIT: u32 = 1000;
/// Error condition Service Bus uses when a lock token is no longer valid.
const MESSAGE_LOCK_LOST: &str = "com.microsoft:message-lock-lost";

/// What a link is attached to.
#[derive(Debug, Clone)]
enum Node {
    /// The `$cbs` node of the connection.
    Cbs,
    /// A queue of a namespace, by the namespace's host name and the queue's lookup key.
    Queue { host: String, queue: String },
}

/// A message being received in several transfer frames.
struct Partial {
    delivery_id: u32,
    settled: bool,
    message_format: u32,
    payload: Vec<u8>,
    oversized: bool,
}

struct Link {
    handle: u32,
    node: Node,
    /// Whether the broker sends on this link (the client receives).
    broker_sends: bool,
    snd_settle_mode: SenderSettleMode,
    delivery_count: u32,
    link_credit: u32,
    drain: bool,
    max_message_size: u64,
    partial: Option<Partial>,
    /// Set when the broker detached the link first and waits for the client's detach.
    detach_sent: bool,
    /// `$cbs` replies waiting for link credit.
    pending_replies: VecDeque<Vec<u8>>,
    span: Span,
}

/// A message the broker delivered in peek-lock mode and the client has not settled.
struct Unsettled {
    handle: u32,
    host: String,
    queue: String,
    token: uuid::Uuid,
}

pub struct Session {
    pub local_channel: u16,
    next_incoming_id: u32,
    incoming_window: u32,
    next_outgoing_id: u32,
    remote_incoming_window: u32,
    next_delivery_id: u32,
    links: BTreeMap<u32, Link>,
    unsettled: BTreeMap<u32, Unsettled>,
}

impl Session {
    pub fn new(local_channel: u16, begin: &Begin) -> Self {
        Self {
            local_channel,
            next_incoming_id: begin.next_outgoing_id,
            incoming_window: SESSION_WINDOW,
            next_outgoing_id: 1,
            remote_incoming_window: begin.incoming_window,
            next_delivery_id: 0,
            links: BTreeMap::new(),
            unsettled: BTreeMap::new(),
        }
    }

    pub fn begin_reply(&self, remote_channel: u16) -> Begin {
        Begin {
            remote_channel: Some(remote_channel),
            next_outgoing_id: self.next_outgoing_id,
            incoming_window: self.incoming_window,
            outgoing_window: OUTGOING_WINDOW,
            handle_max: Handle(HANDLE_MAX),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }
    }

    pub fn handle(
        &mut self,
        connection: &mut Connection,
        performative: Performative,
        payload: &[u8],
    ) -> Result<(), ConnectionFailure> {
        match performative {
            Performative::Attach(attach) => self.on_attach(connection, attach),
            Performative::Flow(flow) => self.on_flow(connection, flow),
            Performative::Transfer(transfer) => self.on_transfer(connection, transfer, payload),
            Performative::Disposition(disposition) => {
                self.on_disposition(connection, disposition);
                Ok(())
            }
            Performative::Detach(detach) => self.on_detach(connection, detach),
            other => Err(ConnectionFailure::new(
                AmqpError::IllegalState,
                format!("unexpected frame on a session: {other:?}"),
            )),
        }
    }

    fn on_attach(
        &mut self,
        connection: &mut Connection,
        attach: Attach,
    ) -> Result<(), ConnectionFailure> {
        let handle = attach.handle.0;
        if handle > HANDLE_MAX || self.links.contains_key(&handle) {
            return Err(ConnectionFailure::new(
                SessionError::HandleInUse,
                format!("link handle {handle} is in use or above handle-max {HANDLE_MAX}"),
            ));
        }
        let client_sends = attach.role == Role::Sender;
        let address = if client_sends {
            attach
                .target
                .as_deref()
                .cloned()
                .and_then(|t| Target::try_from(t).ok())
                .and_then(|t| t.address)
        } else {
            attach.source.as_ref().and_then(|s| s.address.clone())
        }
        .unwrap_or_default();
        let span = debug_span!(
            "link",
            name = %attach.name,
            %address,
            direction = if client_sends { "send" } else { "receive" }
        );
        let entity = EntityAddress::parse(&address);
        let resolved = if entity.is_cbs() {
            Ok((Node::Cbs, u64::MAX))
        } else if entity.is_management() {
            // TODO: serve `$management` requests (renew-lock, peek, schedule); until then
            // clients that need them fail at attach.
            Err((
                AmqpError::NotImplemented.into(),
                "The $management node is not supported.".to_owned(),
            ))
        } else {
            resolve_queue(connection, &entity, client_sends)
        };

        let mut reply = Attach {
            name: attach.name.clone(),
            handle: attach.handle.clone(),
            role: if client_sends {
                Role::Receiver
            } else {
                Role::Sender
            },
            snd_settle_mode: attach.snd_settle_mode.clone(),
            rcv_settle_mode: attach.rcv_settle_mode.clone(),
            source: attach.source.clone(),
            target: attach.target.clone(),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: (!client_sends).then_some(0),
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        let (node, max_message_size) = match resolved {
            Ok(resolved) => resolved,
            Err((condition, description)) => {
                span.in_scope(|| debug!(?condition, %description, "rejected: link refused"));
                reply.source = None;
                reply.target = None;
                self.frame(&mut connection.outbox, &codec::encode_full(&reply), &[]);
                let detach = Detach {
                    handle: attach.handle,
                    closed: true,
                    error: Some(AmqpErrorBody::new(condition, description, None)),
                };
                self.frame(&mut connection.outbox, &codec::encode_full(&detach), &[]);
                self.links.insert(handle, Link::rejected(handle, span));
                return Ok(());
            }
        };

        reply.max_message_size = Some(max_message_size);
        if client_sends {
            // Service Bus settles what it receives at once, whatever the client asked for.
            reply.rcv_settle_mode = ReceiverSettleMode::First;
        } else if matches!(node, Node::Cbs) {
            reply.snd_settle_mode = SenderSettleMode::Settled;
            reply.rcv_settle_mode = ReceiverSettleMode::First;
        }
        span.in_scope(|| debug!(?node, "attached"));
        let link = Link {
            handle,
            node,
            broker_sends: !client_sends,
            snd_settle_mode: reply.snd_settle_mode.clone(),
            delivery_count: if client_sends {
                attach.initial_delivery_count.unwrap_or(0)
            } else {
                0
            },
            link_credit: if client_sends { LINK_CREDIT } else { 0 },
            drain: false,
            max_message_size,
            partial: None,
            detach_sent: false,
            pending_replies: VecDeque::new(),
            span,
        };
        self.frame(&mut connection.outbox, &codec::encode_full(&reply), &[]);
        if client_sends {
            let flow = self.flow_for(Some(&link));
            self.frame(&mut connection.outbox, &codec::encode_full(&flow), &[]);
        }
        self.links.insert(handle, link);
        Ok(())
    }

    fn on_flow(
        &mut self,
        connection: &mut Connection,
        flow: Flow,
    ) -> Result<(), ConnectionFailure> {
        let window = match flow.next_incoming_id {
            Some(next) => {
                i64::from(next) + i64::from(flow.incoming_window) - i64::from(self.next_outgoing_id)
            }
            None => i64::from(flow.incoming_window),
        };
        self.remote_incoming_window = window.clamp(0, i64::from(u32::MAX)) as u32;
        match flow.handle {
            Some(Handle(handle)) => {
                let link = self
                    .links
                    .get_mut(&handle)
                    .ok_or_else(|| unattached(handle))?;
                if link.broker_sends {
                    let receiver_count = flow.delivery_count.unwrap_or(0);
                    let credit = i64::from(receiver_count)
                        + i64::from(flow.link_credit.unwrap_or(0))
                        - i64::from(link.delivery_count);
                    link.link_credit = credit.clamp(0, i64::from(u32::MAX)) as u32;
                    link.drain = flow.drain;
                }
                if flow.echo {
                    let reply = self.flow_for(self.links.get(&handle));
                    self.frame(&mut connection.outbox, &codec::encode_full(&reply), &[]);
                }
            }
            None if flow.echo => {
                let reply = self.flow_for(None);
                self.frame(&mut connection.outbox, &codec::encode_full(&reply), &[]);
            }
            None => {}
        }
        self.pump(connection);
        Ok(())
    }

    fn on_transfer(
        &mut self,
        connection: &mut Connection,
        transfer: Transfer,
        payload: &[u8],
    ) -> Result<(), ConnectionFailure> {
        self.next_incoming_id = self.next_incoming_id.wrapping_add(1);
        self.incoming_window = self.incoming_window.saturating_sub(1);
        let handle = transfer.handle.0;
        let link = self
            .links
            .get_mut(&handle)
            .ok_or_else(|| unattached(handle))?;
        if link.broker_sends {
            return Err(ConnectionFailure::new(
                AmqpError::NotAllowed,
                format!("transfer on link {handle}, which the client receives on"),
            ));
        }
        if link.detach_sent {
            return Ok(());
        }
        let partial = link.partial.get_or_insert_with(|| Partial {
            delivery_id: transfer.delivery_id.unwrap_or_default(),
            settled: false,
            message_format: transfer.message_format.unwrap_or(0),
            payload: Vec::new(),
            oversized: false,
        });
        if partial.payload.is_empty() {
            link.delivery_count = link.delivery_count.wrapping_add(1);
            link.link_credit = link.link_credit.saturating_sub(1);
        }
        partial.settled |= transfer.settled.unwrap_or(false);
        if partial.payload.len() + payload.len() > link.max_message_size as usize {
            partial.oversized = true;
        } else {
            partial.payload.extend_from_slice(payload);
        }
        if transfer.aborted {
            link.partial = None;
            return Ok(());
        }
        if transfer.more {
            return Ok(());
        }
        let delivery = link.partial.take().expect("inserted above");
        let node = link.node.clone();
        let span = link.span.clone();
        let outcome = span.in_scope(|| match node {
            Node::Cbs => self.receive_put_token(connection, &delivery),
            Node::Queue { host, queue } => receive_message(connection, &host, &queue, &delivery),
        });
        if !delivery.settled {
            let disposition = Disposition {
                role: Role::Receiver,
                first: delivery.delivery_id,
                last: None,
                settled: true,
                state: Some(outcome),
                batchable: false,
            };
            self.frame(
                &mut connection.outbox,
                &codec::encode_full(&disposition),
                &[],
            );
        }
        self.replenish(connection, handle);
        Ok(())
    }

    /// Handles a put-token request and queues its reply on the client's `$cbs` receiver.
    fn receive_put_token(
        &mut self,
        connection: &mut Connection,
        delivery: &Partial,
    ) -> DeliveryState {
        let request = match cbs::parse_request(&delivery.payload) {
            Ok(request) => request,
            Err(error) => return reject(AmqpError::DecodeError.into(), error.to_string()),
        };
        let result = cbs::put_token(&connection.model(), &request);
        let (status, description) = match result {
            Ok(grant) => {
                debug!(audience = %request.name, principal = %grant.principal, "put-token accepted");
                connection
                    .grants
                    .retain(|g| !(g.host == grant.host && g.entity_key == grant.entity_key));
                connection.grants.push(grant);
                (STATUS_ACCEPTED, "Accepted".to_owned())
            }
            Err(failure) => {
                debug!(audience = %request.name, status = failure.status, description = %failure.description, "rejected: put-token");
                (failure.status, failure.description)
            }
        };
        let reply = cbs::encode_response(
            request.message_id,
            request.reply_to.clone(),
            status,
            &description,
        );
        if !self.queue_cbs_reply(&mut connection.outbox, request.reply_to.as_deref(), &reply) {
            connection.send_cbs_reply(request.reply_to.as_deref(), reply);
        }
        Accepted {}.into()
    }

    /// Queues a `$cbs` reply on this session's `$cbs` receiver link, preferring the one whose
    /// target is `reply_to`. Returns `false` when the session has no such link.
    pub fn queue_cbs_reply(
        &mut self,
        outbox: &mut Outbox,
        reply_to: Option<&str>,
        message: &[u8],
    ) -> bool {
        let candidates: Vec<u32> = self
            .links
            .values()
            .filter(|l| l.broker_sends && matches!(l.node, Node::Cbs) && !l.detach_sent)
            .map(|l| l.handle)
            .collect();
        let _ = reply_to;
        let Some(handle) = candidates.first().copied() else {
            return false;
        };
        let link = self.links.get_mut(&handle).expect("listed above");
        link.pending_replies.push_back(message.to_vec());
        self.send_pending_replies(outbox, handle);
        true
    }

    fn send_pending_replies(&mut self, outbox: &mut Outbox, handle: u32) {
        loop {
            let Some(link) = self.links.get_mut(&handle) else {
                return;
            };
            if link.link_credit == 0 || self.remote_incoming_window == 0 {
                return;
            }
            let Some(reply) = link.pending_replies.pop_front() else {
                return;
            };
            link.link_credit -= 1;
            let tag = link.delivery_count.to_be_bytes();
            link.delivery_count = link.delivery_count.wrapping_add(1);
            self.send_transfer(outbox, handle, &tag, true, &reply);
        }
    }

    fn on_disposition(&mut self, connection: &mut Connection, disposition: Disposition) {
        if disposition.role == Role::Sender {
            // The client settles its own transfers, which the broker settled already.
            return;
        }
        let last = disposition.last.unwrap_or(disposition.first);
        if last < disposition.first {
            return;
        }
        let ids: Vec<u32> = self
            .unsettled
            .range(disposition.first..=last)
            .map(|(id, _)| *id)
            .collect();
        let mut unlocked = false;
        for id in ids {
            let Some(state) = disposition.state.clone() else {
                if disposition.settled {
                    self.unsettled.remove(&id);
                }
                continue;
            };
            let entry = self.unsettled.get(&id).expect("listed above");
            let Some(reply_state) = settle(connection, entry, state, &mut unlocked) else {
                continue;
            };
            self.unsettled.remove(&id);
            if !disposition.settled {
                let reply = Disposition {
                    role: Role::Sender,
                    first: id,
                    last: None,
                    settled: true,
                    state: Some(reply_state),
                    batchable: false,
                };
                self.frame(&mut connection.outbox, &codec::encode_full(&reply), &[]);
            }
        }
        if unlocked {
            connection.context.queue_changed.notify_waiters();
        }
    }

    fn on_detach(
        &mut self,
        connection: &mut Connection,
        detach: Detach,
    ) -> Result<(), ConnectionFailure> {
        let handle = detach.handle.0;
        let Some(link) = self.links.remove(&handle) else {
            // A client whose attach was refused may detach twice: once in reply to the
            // broker's detach and once more while it cleans up.
            debug!(
                handle,
                "detach for a link that is no longer attached ignored"
            );
            return Ok(());
        };
        if let Some(error) = &detach.error {
            link.span
                .in_scope(|| debug!(condition = ?error.condition, "client detached with an error"));
        }
        if self.release_locks_where(&connection.context.cloud, |u| u.handle == handle) {
            connection.context.queue_changed.notify_waiters();
        }
        if !link.detach_sent {
            let reply = Detach {
                handle: Handle(handle),
                closed: detach.closed,
                error: None,
            };
            self.frame(&mut connection.outbox, &codec::encode_full(&reply), &[]);
        }
        Ok(())
    }

    /// Sends queued `$cbs` replies and queue messages on every link with credit, then
    /// answers drain requests that found nothing more to send.
    pub fn pump(&mut self, connection: &mut Connection) {
        let handles: Vec<u32> = self
            .links
            .values()
            .filter(|l| l.broker_sends && !l.detach_sent)
            .map(|l| l.handle)
            .collect();
        for handle in handles {
            let node = self.links[&handle].node.clone();
            match node {
                Node::Cbs => self.send_pending_replies(&mut connection.outbox, handle),
                Node::Queue { host, queue } => {
                    self.deliver_from_queue(connection, handle, &host, &queue)
                }
            }
            let link = self.links.get_mut(&handle).expect("listed above");
            if link.drain && link.link_credit > 0 {
                link.delivery_count = link.delivery_count.wrapping_add(link.link_credit);
                link.link_credit = 0;
                let flow = self.flow_for(self.links.get(&handle));
                self.frame(&mut connection.outbox, &codec::encode_full(&flow), &[]);
            }
        }
    }

    fn deliver_from_queue(
        &mut self,
        connection: &mut Connection,
        handle: u32,
        host: &str,
        queue: &str,
    ) {
        loop {
            let link = &self.links[&handle];
            if link.link_credit == 0 || self.remote_incoming_window == 0 {
                return;
            }
            let peek_lock = link.snd_settle_mode != SenderSettleMode::Settled;
            let taken = {
                let mut cloud = connection.model();
                let now = cloud.now();
                let queue = cloud
                    .namespace_by_host_mut(host)
                    .and_then(|n| n.queue_mut(queue));
                match queue {
                    Some(queue) if peek_lock => queue.lock_next(now),
                    Some(queue) => queue.receive_and_delete(now),
                    None => None,
                }
            };
            let Some(stored) = taken else { return };
            let encoded = match message::encode_delivery(&stored) {
                Ok(encoded) => encoded,
                Err(error) => {
                    // Messages are validated when they are sent, so this means the model
                    // was filled with bytes that are not an AMQP message.
                    tracing::error!(%error, sequence_number = stored.sequence_number, "stored message cannot be encoded");
                    return;
                }
            };
            let token = stored
                .lock
                .as_ref()
                .map_or_else(uuid::Uuid::new_v4, |lock| lock.token);
            let delivery_id = self.send_transfer(
                &mut connection.outbox,
                handle,
                &lock_token_tag(token),
                !peek_lock,
                &encoded,
            );
            let link = self.links.get_mut(&handle).expect("checked above");
            link.delivery_count = link.delivery_count.wrapping_add(1);
            link.link_credit -= 1;
            link.span.in_scope(|| {
                debug!(
                    sequence_number = stored.sequence_number,
                    delivery_id, "delivered"
                )
            });
            if peek_lock {
                self.unsettled.insert(
                    delivery_id,
                    Unsettled {
                        handle,
                        host: host.to_owned(),
                        queue: queue.to_owned(),
                        token,
                    },
                );
            }
        }
    }

    /// Sends one delivery, split into frames that fit the client's max-frame-size, and
    /// returns its delivery id.
    fn send_transfer(
        &mut self,
        outbox: &mut Outbox,
        handle: u32,
        tag: &[u8],
        settled: bool,
        payload: &[u8],
    ) -> u32 {
        let delivery_id = self.next_delivery_id;
        self.next_delivery_id = self.next_delivery_id.wrapping_add(1);
        let mut transfer = Transfer {
            handle: Handle(handle),
            delivery_id: Some(delivery_id),
            delivery_tag: Some(DeliveryTag::from(tag.to_vec())),
            message_format: Some(0),
            settled: Some(settled),
            more: true,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        };
        let continued = codec::encode_full(&transfer);
        let limit = outbox.peer_max_frame_size as usize - 8;
        let chunk = limit.saturating_sub(continued.len()).max(1);
        let mut rest = payload;
        while continued.len() + rest.len() > limit {
            let (head, tail) = rest.split_at(chunk.min(rest.len()));
            self.frame(outbox, &continued, head);
            rest = tail;
        }
        transfer.more = false;
        self.frame(outbox, &codec::encode_full(&transfer), rest);
        delivery_id
    }

    /// Writes a frame on this session's channel, counting transfers against the windows.
    fn frame(&mut self, outbox: &mut Outbox, performative: &[u8], payload: &[u8]) {
        // Byte 2 of an encoded performative is its descriptor code; 0x14 is transfer.
        if performative.get(2) == Some(&0x14) {
            self.next_outgoing_id = self.next_outgoing_id.wrapping_add(1);
            self.remote_incoming_window = self.remote_incoming_window.saturating_sub(1);
        }
        outbox.frame(self.local_channel, performative, payload);
    }

    /// Refills link credit and the session window after the client used half of either.
    fn replenish(&mut self, connection: &mut Connection, handle: u32) {
        let mut refill_link = false;
        if let Some(link) = self.links.get_mut(&handle)
            && link.link_credit < LINK_CREDIT / 2
            && !link.detach_sent
        {
            link.link_credit = LINK_CREDIT;
            refill_link = true;
        }
        let refill_session = self.incoming_window < SESSION_WINDOW / 2;
        if refill_session {
            self.incoming_window = SESSION_WINDOW;
        }
        if refill_link || refill_session {
            let flow = self.flow_for(refill_link.then(|| &self.links[&handle]));
            self.frame(&mut connection.outbox, &codec::encode_full(&flow), &[]);
        }
    }

    fn flow_for(&self, link: Option<&Link>) -> Flow {
        Flow {
            next_incoming_id: Some(self.next_incoming_id),
            incoming_window: self.incoming_window,
            next_outgoing_id: self.next_outgoing_id,
            outgoing_window: OUTGOING_WINDOW,
            handle: link.map(|l| Handle(l.handle)),
            delivery_count: link.map(|l| l.delivery_count),
            link_credit: link.map(|l| l.link_credit),
            available: None,
            drain: link.is_some_and(|l| l.drain),
            echo: false,
            properties: None,
        }
    }

    /// Unlocks every message this session holds locked. Returns whether any was unlocked.
    pub fn release_locks(&mut self, cloud: &SharedCloud) -> bool {
        self.release_locks_where(cloud, |_| true)
    }

    fn release_locks_where(
        &mut self,
        cloud: &SharedCloud,
        matches: impl Fn(&Unsettled) -> bool,
    ) -> bool {
        let ids: Vec<u32> = self
            .unsettled
            .iter()
            .filter(|(_, u)| matches(u))
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return false;
        }
        let mut cloud = lock(cloud);
        for id in ids {
            let entry = self.unsettled.remove(&id).expect("listed above");
            if let Some(queue) = cloud
                .namespace_by_host_mut(&entry.host)
                .and_then(|n| n.queue_mut(&entry.queue))
            {
                queue.release_lock(entry.token);
            }
        }
        true
    }
}

impl Link {
    fn rejected(handle: u32, span: Span) -> Self {
        Self {
            handle,
            node: Node::Cbs,
            broker_sends: false,
            snd_settle_mode: SenderSettleMode::Settled,
            delivery_count: 0,
            link_credit: 0,
            drain: false,
            max_message_size: 0,
            partial: None,
            detach_sent: true,
            pending_replies: VecDeque::new(),
            span,
        }
    }
}

/// Resolves an entity link to its queue and checks the claim its direction needs.
fn resolve_queue(
    connection: &Connection,
    entity: &EntityAddress,
    client_sends: bool,
) -> Result<(Node, u64), (ErrorCondition, String)> {
    let cloud = connection.model();
    let now = cloud.now();
    let host = entity
        .host
        .clone()
        .filter(|host| cloud.namespace_by_host(host).is_some())
        .or_else(|| connection.hostname.clone())
        .unwrap_or_default();
    let Some(namespace) = cloud.namespace_by_host(&host) else {
        return Err((
            AmqpError::NotFound.into(),
            cbs::not_found_description(&host, &entity.entity, now),
        ));
    };
    let Some(queue) = namespace.queue(&entity.entity) else {
        let host = namespace.host_name();
        return Err((
            AmqpError::NotFound.into(),
            cbs::not_found_description(&host, &entity.entity, now),
        ));
    };
    let (action, claim) = if client_sends {
        (SERVICEBUS_SEND, "Send")
    } else {
        (SERVICEBUS_RECEIVE, "Listen")
    };
    let host = namespace.host_name();
    let allowed = connection
        .grants
        .iter()
        .filter(|grant| grant.covers(&host, entity, now))
        .any(|grant| cloud.has_data_action(&grant.principal, &queue.id, action));
    if !allowed {
        let description = cbs::unauthorized_description(namespace, &entity.entity, claim, now);
        return Err((AmqpError::UnauthorizedAccess.into(), description));
    }
    let node = Node::Queue {
        host,
        queue: entity.entity_key(),
    };
    Ok((node, namespace.max_message_size()))
}

/// Stores a message (or each message of a batch) that a client sent to a queue.
fn receive_message(
    connection: &mut Connection,
    host: &str,
    queue: &str,
    delivery: &Partial,
) -> DeliveryState {
    if delivery.oversized {
        let description =
            "The received message exceeds the max-message-size of the link.".to_owned();
        debug!(%description, "rejected: message too large");
        return reject(LinkError::MessageSizeExceeded.into(), description);
    }
    let messages = match message::unpack_transfer(&delivery.payload, delivery.message_format) {
        Ok(messages) => messages,
        Err(error) => {
            debug!(%error, "rejected: message could not be decoded");
            return reject(AmqpError::DecodeError.into(), error.to_string());
        }
    };
    {
        let mut cloud = connection.model();
        let now = cloud.now();
        let Some(queue) = cloud
            .namespace_by_host_mut(host)
            .and_then(|n| n.queue_mut(queue))
        else {
            let description = cbs::not_found_description(host, queue, now);
            debug!(%description, "rejected: queue was deleted");
            return reject(AmqpError::NotFound.into(), description);
        };
        for incoming in &messages {
            queue.enqueue(incoming.header.clone(), incoming.encoded.clone(), now);
        }
    }
    debug!(count = messages.len(), "enqueued");
    connection.context.queue_changed.notify_waiters();
    Accepted {}.into()
}

/// Applies a client's outcome to the locked message. Returns the state to echo, or `None`
/// when the state is not a terminal outcome.
fn settle(
    connection: &Connection,
    entry: &Unsettled,
    state: DeliveryState,
    unlocked: &mut bool,
) -> Option<DeliveryState> {
    let mut cloud = connection.model();
    let now = cloud.now();
    let queue = cloud
        .namespace_by_host_mut(&entry.host)
        .and_then(|n| n.queue_mut(&entry.queue));
    let result = match (&state, queue) {
        (DeliveryState::Accepted(_), Some(queue)) => queue.complete(entry.token, now),
        // NOTE: modified with undeliverable-here (defer) is treated as abandon; deferral
        // needs `$management` receive-by-sequence-number, which this broker lacks.
        (DeliveryState::Released(_) | DeliveryState::Modified(_), Some(queue)) => {
            *unlocked = true;
            queue.abandon(entry.token, now)
        }
        (DeliveryState::Rejected(_), Some(queue)) => queue.dead_letter(entry.token, now),
        (
            DeliveryState::Accepted(_)
            | DeliveryState::Released(_)
            | DeliveryState::Modified(_)
            | DeliveryState::Rejected(_),
            None,
        ) => Err(crate::cloud::servicebus::LockLost),
        _ => return None,
    };
    Some(match result {
        Ok(()) => state,
        Err(lost) => {
            let description = format!("{lost} {}", cbs::tracking_suffix(None, now));
            debug!(%description, "rejected: settlement with a lost lock");
            reject(
                ErrorCondition::Custom(Symbol::from(MESSAGE_LOCK_LOST)),
                description,
            )
        }
    })
}

fn reject(condition: ErrorCondition, description: String) -> DeliveryState {
    Rejected {
        error: Some(AmqpErrorBody::new(condition, description, None)),
    }
    .into()
}

fn unattached(handle: u32) -> ConnectionFailure {
    ConnectionFailure::new(
        SessionError::UnattachedHandle,
        format!("link handle {handle} is not attached"),
    )
}
