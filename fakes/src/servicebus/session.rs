//! A session and its links: attach, flow, transfer, disposition and detach, with the
//! session and link flow control of AMQP 1.0 part 2.

use std::collections::{BTreeMap, VecDeque};

use fe2o3_amqp_types::definitions::{
    AmqpError, DeliveryTag, Error as AmqpErrorBody, ErrorCondition, Handle, LinkError,
    ReceiverSettleMode, Role, SenderSettleMode, SessionError,
};
use fe2o3_amqp_types::messaging::{Accepted, DeliveryState, Modified, Rejected, Target};
use fe2o3_amqp_types::performatives::{
    Attach, Begin, Detach, Disposition, Flow, Performative, Transfer,
};
use fe2o3_amqp_types::primitives::{OrderedMap, Symbol, Value};
use time::OffsetDateTime;
use tracing::{Span, debug, debug_span};

use super::address::EntityAddress;
use super::cbs::{self, STATUS_ACCEPTED};
use super::codec;
use super::connection::{Connection, ConnectionFailure, Outbox};
use super::management;
use super::message::{self, lock_token_tag};
use crate::cloud::faults::{AmqpFaultAction, AmqpFaultPoint};
use crate::cloud::rbac::{SERVICEBUS_RECEIVE, SERVICEBUS_SEND};
use crate::cloud::servicebus::{DeadLetterInfo, SendError, SessionLockError, SubQueue};
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
/// Error condition of a `rejected` outcome that requests dead-lettering.
const DEAD_LETTER: &str = "com.microsoft:dead-letter";
/// Keys of the `info` map of a dead-letter `rejected` outcome.
const DEAD_LETTER_REASON: &str = "DeadLetterReason";
const DEAD_LETTER_ERROR_DESCRIPTION: &str = "DeadLetterErrorDescription";
/// Source filter that requests a message session: a session id, or null for the next
/// available session.
const SESSION_FILTER: &str = "com.microsoft:session-filter";
/// Attach property with the session lock's expiry in .NET ticks.
const LOCKED_UNTIL_UTC: &str = "com.microsoft:locked-until-utc";
/// .NET ticks (100 ns since 0001-01-01) at the Unix epoch.
const TICKS_AT_UNIX_EPOCH: i64 = 621_355_968_000_000_000;
/// Error conditions of refused session receivers.
const SESSION_CANNOT_BE_LOCKED: &str = "com.microsoft:session-cannot-be-locked";
const TIMEOUT: &str = "com.microsoft:timeout";

/// What a link is attached to.
#[derive(Debug, Clone)]
enum Node {
    /// The `$cbs` node of the connection.
    Cbs,
    /// A queue of a namespace, by the namespace's host name and the queue's lookup key,
    /// with the sub-queue and, on a session receiver, the locked session.
    Queue {
        host: String,
        queue: String,
        sub_queue: SubQueue,
        session: Option<String>,
    },
    /// A queue's `$management` node.
    Management {
        host: String,
        queue: String,
        sub_queue: SubQueue,
    },
}

/// The node an entity link resolved to, and the fields the broker's attach reply adds.
struct Resolved {
    node: Node,
    max_message_size: u64,
    session_filter: Option<String>,
    properties: Option<OrderedMap<Symbol, Value>>,
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
    /// `$cbs` or `$management` replies waiting for link credit.
    pending_replies: VecDeque<Vec<u8>>,
    /// Target address of a link the client receives on, which request-response clients
    /// name as `reply-to`.
    client_address: Option<String>,
    /// The namespace host and entity whose token keeps an entity link open.
    authorized_for: Option<(String, EntityAddress)>,
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
        let fault = (!entity.is_cbs())
            .then(|| connection.model().amqp_faults.take(AmqpFaultPoint::Attach))
            .flatten();
        let resolved = if let Some(fault) = fault {
            let condition = ErrorCondition::Custom(Symbol::from(fault.condition));
            if fault.action == AmqpFaultAction::CloseConnection {
                return Err(ConnectionFailure::new(condition, fault.description));
            }
            Err((condition, fault.description))
        } else if entity.is_cbs() {
            Ok(Resolved {
                node: Node::Cbs,
                max_message_size: u64::MAX,
                session_filter: None,
                properties: None,
            })
        } else {
            resolve_entity(connection, &entity, client_sends, &attach)
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
        let resolved = match resolved {
            Ok(resolved) => resolved,
            Err((condition, description)) => {
                span.in_scope(|| debug!(?condition, %description, "rejected a link attach"));
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

        let Resolved {
            node,
            max_message_size,
            session_filter,
            properties,
        } = resolved;
        reply.max_message_size = Some(max_message_size);
        reply.properties = properties;
        if let (Some(session), Some(source)) = (session_filter, reply.source.as_mut()) {
            source
                .filter
                .get_or_insert_with(OrderedMap::new)
                .insert(Symbol::from(SESSION_FILTER), Value::String(session));
        }
        if client_sends {
            // Service Bus settles what it receives at once, whatever the client asked for.
            reply.rcv_settle_mode = ReceiverSettleMode::First;
        } else if matches!(node, Node::Cbs | Node::Management { .. }) {
            reply.snd_settle_mode = SenderSettleMode::Settled;
            reply.rcv_settle_mode = ReceiverSettleMode::First;
        }
        span.in_scope(|| debug!(?node, "attached"));
        let authorized_for = match &node {
            Node::Cbs => None,
            Node::Queue { host, .. } | Node::Management { host, .. } => {
                Some((host.clone(), entity.clone()))
            }
        };
        let client_address = if client_sends {
            None
        } else {
            attach
                .target
                .as_deref()
                .cloned()
                .and_then(|t| Target::try_from(t).ok())
                .and_then(|t| t.address)
        };
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
            client_address,
            authorized_for,
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
            Node::Queue { host, queue, .. } => {
                receive_message(connection, &host, &queue, &delivery)
            }
            Node::Management {
                host,
                queue,
                sub_queue,
            } => self.receive_management_request(
                connection,
                handle,
                (&host, &queue, sub_queue),
                &delivery,
            ),
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
                debug!(audience = %request.name, authority = %grant.authority, "put-token accepted");
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

    /// Runs a `$management` request and queues its reply on the client's receiver link of
    /// the same node in this session.
    fn receive_management_request(
        &mut self,
        connection: &mut Connection,
        request_handle: u32,
        (host, queue, sub_queue): (&str, &str, SubQueue),
        delivery: &Partial,
    ) -> DeliveryState {
        let request = match management::parse_request(&delivery.payload) {
            Ok(request) => request,
            Err(error) => return reject(AmqpError::DecodeError.into(), error.to_string()),
        };
        let reply = execute_management(connection, host, queue, sub_queue, &request);
        debug!(operation = %request.operation, status = reply.status, "management request");
        if reply.status < 300 {
            connection.context.queue_changed.notify_waiters();
        }
        let message = management::encode_reply(request.message_id, request.reply_to.clone(), reply);
        let node_address = self.links[&request_handle]
            .authorized_for
            .as_ref()
            .map(|(_, entity)| entity.entity_key());
        let candidates: Vec<u32> = self
            .links
            .values()
            .filter(|l| l.broker_sends && !l.detach_sent)
            .filter(|l| matches!(l.node, Node::Management { .. }))
            .filter(|l| l.authorized_for.as_ref().map(|(_, e)| e.entity_key()) == node_address)
            .map(|l| l.handle)
            .collect();
        let preferred = candidates.iter().copied().find(|handle| {
            request.reply_to.is_some() && self.links[handle].client_address == request.reply_to
        });
        match preferred.or_else(|| candidates.first().copied()) {
            Some(handle) => {
                let link = self.links.get_mut(&handle).expect("listed above");
                link.pending_replies.push_back(message);
                self.send_pending_replies(&mut connection.outbox, handle);
            }
            None => debug!("management reply dropped: the client has no receiver on the node"),
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
        let preferred = candidates.iter().copied().find(|handle| {
            reply_to.is_some() && self.links[handle].client_address.as_deref() == reply_to
        });
        let Some(handle) = preferred.or_else(|| candidates.first().copied()) else {
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
        let mut released =
            self.release_locks_where(&connection.context.cloud, |u| u.handle == handle);
        released |= release_session_lock(&connection.context.cloud, &link, connection.id);
        if released {
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

    /// Detaches entity links whose token expired without renewal, sends queued replies and
    /// queue messages on every link with credit, then completes drain requests that found
    /// nothing more to send.
    pub fn pump(&mut self, connection: &mut Connection) {
        self.detach_expired_links(connection);
        let handles: Vec<u32> = self
            .links
            .values()
            .filter(|l| l.broker_sends && !l.detach_sent)
            .map(|l| l.handle)
            .collect();
        for handle in handles {
            let node = self.links[&handle].node.clone();
            match node {
                Node::Cbs | Node::Management { .. } => {
                    self.send_pending_replies(&mut connection.outbox, handle)
                }
                Node::Queue {
                    host,
                    queue,
                    sub_queue,
                    session,
                } => self.deliver_from_queue(
                    connection,
                    handle,
                    (&host, &queue, sub_queue),
                    session.as_deref(),
                ),
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

    /// Closes the entity links of this session that no unexpired token covers any more, as
    /// Service Bus does when a token expires without a new put-token.
    fn detach_expired_links(&mut self, connection: &mut Connection) {
        let now = connection.model().now();
        let expired: Vec<u32> = self
            .links
            .values()
            .filter(|l| !l.detach_sent)
            .filter(|l| {
                l.authorized_for.as_ref().is_some_and(|(host, entity)| {
                    !connection
                        .grants
                        .iter()
                        .any(|g| g.covers(host, entity, now))
                })
            })
            .map(|l| l.handle)
            .collect();
        for handle in expired {
            let link = self.links.get_mut(&handle).expect("listed above");
            link.detach_sent = true;
            link.span
                .in_scope(|| debug!("detached: the link's token expired without renewal"));
            let description = format!(
                "ExpiredToken: The token is expired. {}",
                cbs::tracking_suffix(None, now)
            );
            // NOTE: the condition and wording Service Bus uses for this detach were not
            // seen in a service trace; clients treat unauthorized-access as not retryable.
            let detach = Detach {
                handle: Handle(handle),
                closed: true,
                error: Some(AmqpErrorBody::new(
                    AmqpError::UnauthorizedAccess,
                    description,
                    None,
                )),
            };
            self.frame(&mut connection.outbox, &codec::encode_full(&detach), &[]);
            let mut released =
                self.release_locks_where(&connection.context.cloud, |u| u.handle == handle);
            released |= release_session_lock(
                &connection.context.cloud,
                &self.links[&handle],
                connection.id,
            );
            if released {
                connection.context.queue_changed.notify_waiters();
            }
        }
    }

    fn deliver_from_queue(
        &mut self,
        connection: &mut Connection,
        handle: u32,
        (host, queue, sub_queue): (&str, &str, SubQueue),
        session: Option<&str>,
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
                    Some(queue) if peek_lock => queue.lock_next_from(sub_queue, session, now),
                    Some(queue) => queue.receive_and_delete_from(sub_queue, session, now),
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

    /// Unlocks every message and message session this session's links hold locked, with
    /// `owner` the connection's id. Returns whether anything was unlocked.
    pub fn release_locks(&mut self, cloud: &SharedCloud, owner: uuid::Uuid) -> bool {
        let mut released = self.release_locks_where(cloud, |_| true);
        for link in self.links.values() {
            released |= release_session_lock(cloud, link, owner);
        }
        released
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
            client_address: None,
            authorized_for: None,
            span,
        }
    }
}

/// Resolves an entity link to its queue, sub-queue or `$management` node, checks the
/// claim its direction needs, and locks the message session a session receiver requests.
fn resolve_entity(
    connection: &Connection,
    entity: &EntityAddress,
    client_sends: bool,
    attach: &Attach,
) -> Result<Resolved, (ErrorCondition, String)> {
    let mut cloud = connection.model();
    let now = cloud.now();
    let path = entity.node_path();
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
    let host = namespace.host_name();
    let Some(queue) = namespace.queue(&path.queue) else {
        return Err((
            AmqpError::NotFound.into(),
            cbs::not_found_description(&host, &entity.entity, now),
        ));
    };
    let covering: Vec<_> = connection
        .grants
        .iter()
        .filter(|grant| grant.covers(&host, entity, now))
        .collect();
    let may = |action: &str| {
        covering
            .iter()
            .any(|grant| grant.allows(&cloud, &queue.id, action))
    };
    let (allowed, claim) = if path.management {
        (may(SERVICEBUS_SEND) || may(SERVICEBUS_RECEIVE), "Listen")
    } else if client_sends {
        (may(SERVICEBUS_SEND), "Send")
    } else {
        (may(SERVICEBUS_RECEIVE), "Listen")
    };
    if !allowed {
        let description = cbs::unauthorized_description(namespace, &entity.entity, claim, now);
        return Err((AmqpError::UnauthorizedAccess.into(), description));
    }
    let max_message_size = namespace.max_message_size();
    let queue_key = path.queue.to_ascii_lowercase();
    if path.management {
        return Ok(Resolved {
            node: Node::Management {
                host,
                queue: queue_key,
                sub_queue: path.sub_queue,
            },
            max_message_size,
            session_filter: None,
            properties: None,
        });
    }
    if client_sends && path.sub_queue == SubQueue::DeadLetter {
        return Err((
            AmqpError::NotAllowed.into(),
            format!(
                "Sending to the dead-letter queue '{}' is not allowed. {}",
                entity.entity,
                cbs::tracking_suffix(None, now)
            ),
        ));
    }
    let wants_session = attach
        .source
        .as_ref()
        .and_then(|source| source.filter.as_ref())
        .and_then(|filter| filter.get(&Symbol::from(SESSION_FILTER)));
    let requires_session = queue.properties.requires_session;
    let sessionful = !client_sends && path.sub_queue == SubQueue::Main && requires_session;
    let session_request = match (sessionful, wants_session) {
        (false, _) => None,
        (true, None) => {
            return Err((
                AmqpError::NotAllowed.into(),
                format!(
                    "It is not possible for an entity that requires sessions to create a \
                     non-sessionful message receiver. {}",
                    cbs::tracking_suffix(None, now)
                ),
            ));
        }
        (true, Some(Value::String(id))) => Some(Some(id.clone())),
        (true, Some(_)) => Some(None),
    };
    let mut resolved = Resolved {
        node: Node::Queue {
            host: host.clone(),
            queue: queue_key.clone(),
            sub_queue: path.sub_queue,
            session: None,
        },
        max_message_size,
        session_filter: None,
        properties: None,
    };
    let Some(requested) = session_request else {
        return Ok(resolved);
    };
    let queue = cloud
        .namespace_by_host_mut(&host)
        .and_then(|n| n.queue_mut(&queue_key))
        .expect("found above under the same lock");
    let (session, locked_until) = queue
        .lock_session(requested.as_deref(), connection.id, now)
        .map_err(|error| {
            let condition = match error {
                SessionLockError::AlreadyLocked(_) => SESSION_CANNOT_BE_LOCKED,
                // NOTE: Service Bus keeps a next-available request open until a session
                // has messages or the client's `com.microsoft:timeout` passes, but this
                // broker rejects it at once.
                SessionLockError::NoSessionAvailable => TIMEOUT,
            };
            let description = format!("{error} {}", cbs::tracking_suffix(None, now));
            (ErrorCondition::Custom(Symbol::from(condition)), description)
        })?;
    let mut properties = OrderedMap::new();
    properties.insert(
        Symbol::from(LOCKED_UNTIL_UTC),
        Value::Long(dotnet_ticks(locked_until)),
    );
    resolved.node = Node::Queue {
        host,
        queue: queue_key,
        sub_queue: path.sub_queue,
        session: Some(session.clone()),
    };
    resolved.session_filter = Some(session);
    resolved.properties = Some(properties);
    Ok(resolved)
}

/// Runs a `$management` request after checking the claim its operation needs.
fn execute_management(
    connection: &Connection,
    host: &str,
    queue: &str,
    sub_queue: SubQueue,
    request: &management::Request,
) -> management::Reply {
    let mut cloud = connection.model();
    let now = cloud.now();
    let entity = EntityAddress::parse(queue);
    let (action, claim) = if management::needs_send_claim(&request.operation) {
        (SERVICEBUS_SEND, "Send")
    } else {
        (SERVICEBUS_RECEIVE, "Listen")
    };
    let Some(namespace) = cloud.namespace_by_host(host) else {
        return management::Reply::error(
            404,
            "amqp:not-found",
            cbs::not_found_description(host, queue, now),
        );
    };
    let Some(queue_id) = namespace.queue(queue).map(|q| q.id.clone()) else {
        return management::Reply::error(
            404,
            "amqp:not-found",
            cbs::not_found_description(host, queue, now),
        );
    };
    let allowed = connection
        .grants
        .iter()
        .filter(|grant| grant.covers(host, &entity, now))
        .any(|grant| grant.allows(&cloud, &queue_id, action));
    if !allowed {
        let description = cbs::unauthorized_description(namespace, queue, claim, now);
        return management::Reply::unauthorized(description);
    }
    let queue = cloud
        .namespace_by_host_mut(host)
        .and_then(|n| n.queue_mut(queue))
        .expect("found above under the same lock");
    management::execute(queue, sub_queue, request, connection.id, now)
}

/// Releases the message session a session receiver link holds. Returns whether it held one.
fn release_session_lock(cloud: &SharedCloud, link: &Link, owner: uuid::Uuid) -> bool {
    let Node::Queue {
        host,
        queue,
        session: Some(session),
        ..
    } = &link.node
    else {
        return false;
    };
    let mut cloud = lock(cloud);
    if let Some(queue) = cloud
        .namespace_by_host_mut(host)
        .and_then(|n| n.queue_mut(queue))
    {
        queue.release_session(session, owner);
    }
    true
}

/// Converts a time to .NET ticks: 100-nanosecond intervals since 0001-01-01T00:00:00Z.
fn dotnet_ticks(at: OffsetDateTime) -> i64 {
    let ticks_since_epoch = at.unix_timestamp_nanos() / 100;
    TICKS_AT_UNIX_EPOCH + ticks_since_epoch as i64
}

/// Stores a message (or each message of a batch) that a client sent to a queue.
fn receive_message(
    connection: &mut Connection,
    host: &str,
    queue: &str,
    delivery: &Partial,
) -> DeliveryState {
    if let Some(fault) = connection
        .model()
        .amqp_faults
        .take(AmqpFaultPoint::Transfer)
    {
        return reject(
            ErrorCondition::Custom(Symbol::from(fault.condition)),
            fault.description,
        );
    }
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
        // A batch is stored whole or not at all, as Service Bus does.
        if queue.properties.requires_session
            && let Some(error) = messages
                .iter()
                .find(|m| m.session_id.is_none())
                .map(|_| SendError::SessionIdMissing)
        {
            let description = format!("{error} {}", cbs::tracking_suffix(None, now));
            debug!(%description, "rejected: message without a session id");
            return reject(AmqpError::NotAllowed.into(), description);
        }
        for incoming in messages.iter().cloned() {
            if let Err(error) = queue.send(incoming, now) {
                return reject(AmqpError::NotAllowed.into(), error.to_string());
            }
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
        // Defer is `modified` with undeliverable-here; abandon is `modified` without it or
        // `released`.
        (
            DeliveryState::Modified(Modified {
                undeliverable_here: Some(true),
                ..
            }),
            Some(queue),
        ) => queue.defer(entry.token, now),
        (DeliveryState::Released(_) | DeliveryState::Modified(_), Some(queue)) => {
            *unlocked = true;
            queue.abandon(entry.token, now)
        }
        (DeliveryState::Rejected(rejected), Some(queue)) => {
            let info = dead_letter_info(rejected);
            queue.dead_letter(entry.token, info, now)
        }
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
        // The echo repeats the applied outcome. A `rejected` echo must carry no error,
        // because clients read an error there as a failed settlement.
        Ok(()) => match state {
            DeliveryState::Rejected(_) => Rejected { error: None }.into(),
            applied => applied,
        },
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

/// Reads the dead-letter reason and description of a `rejected` outcome: from its error's
/// `info` map when the condition is `com.microsoft:dead-letter`, else from its error.
fn dead_letter_info(rejected: &Rejected) -> DeadLetterInfo {
    let Some(error) = &rejected.error else {
        return DeadLetterInfo::default();
    };
    let info_text = |key: &str| {
        error
            .info
            .as_ref()
            .and_then(|info| info.get(&Symbol::from(key)))
            .and_then(|value| match value {
                Value::String(text) => Some(text.clone()),
                Value::Symbol(symbol) => Some(symbol.as_str().to_owned()),
                _ => None,
            })
    };
    let is_dead_letter = matches!(&error.condition, ErrorCondition::Custom(symbol) if symbol.as_str() == DEAD_LETTER);
    if is_dead_letter {
        DeadLetterInfo {
            reason: info_text(DEAD_LETTER_REASON),
            description: info_text(DEAD_LETTER_ERROR_DESCRIPTION).or(error.description.clone()),
        }
    } else {
        DeadLetterInfo {
            reason: Some(format!("{:?}", error.condition)),
            description: error.description.clone(),
        }
    }
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
