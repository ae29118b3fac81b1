//! A state-machine property test of user isolation and delivery, against the real server.
//!
//! proptest-state-machine generates sequences of 2–8 users logging in (and failing to),
//! connecting by any transport (and with bad tokens), sending messages, acknowledging or
//! withholding acks, disconnecting, resuming, reaching for another user's thread and sending
//! concurrent bursts. Every frame a client reads is checked as it arrives, and after every
//! step the whole picture is checked against the reference model:
//!
//! - a user's frames carry only that user's id and message markers (`mk-<user>-<n>`), never
//!   another user's id, e-mail or marker;
//! - each user's stream is gap-free (`seq` 1..=head, one content per `seq` on every
//!   connection), every run in it is the complete 11-event run of one of the user's messages;
//! - on each connection every event arrives at least once and, de-duplicated by `seq`, exactly
//!   once and in order: first sends above the cursor are consecutive, a `seq` is first-sent at
//!   most once, and `redelivery` frames repeat an event this connection sent, unchanged;
//! - `resume` and `?last_seq=` replay exactly the user's own events after the given `seq`;
//! - every run's result equals the fixture truth for the user's usage data;
//! - thread and run ids of different users never meet.
//!
//! Cases: `APEX_PROPTEST_CASES` (default 24 embedded, 8 on Postgres+Redis); a long soak is
//! `APEX_PROPTEST_CASES=500 cargo test -p apex-backend --test integration isolation_props`.
//! Failing cases are shrunk to a minimal sequence and saved under `proptest-regressions/`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use apex_backend::auth::{TokenKeys, TokenType};
use futures_util::future::join_all;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};
use serde_json::{Value, json};

use crate::support::*;

const EMAILS: [&str; 8] = [
    ALICE,
    BOB,
    CAROL,
    DAVE,
    "vu01@apex.test",
    "vu02@apex.test",
    "vu03@apex.test",
    "vu04@apex.test",
];

/// Open connections per user at most.
const MAX_CONNS: usize = 2;

fn cases(default: u32) -> u32 {
    std::env::var("APEX_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The reference model: what exists, so that only meaningful steps are generated.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Header,
    Subprotocol,
    Ticket,
    LbHeader,
}

/// How a new connection starts: live, or replaying from `pct`% of the stream's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Live,
    QueryLastSeq(u8),
    FirstFrameResume(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BadToken {
    Garbage,
    WrongSecret,
    RefreshToken,
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Login(usize),
    BadLogin {
        user: usize,
        unknown: bool,
    },
    Connect {
        user: usize,
        via: Via,
        start: Start,
        acks: bool,
    },
    BadToken {
        user: usize,
        token: BadToken,
        via: Via,
    },
    Send {
        user: usize,
        conn: usize,
        continue_thread: bool,
    },
    StealThread {
        user: usize,
        victim: usize,
    },
    AckAll {
        user: usize,
        conn: usize,
    },
    Resume {
        user: usize,
        conn: usize,
        pct: u8,
    },
    Disconnect {
        user: usize,
        conn: usize,
    },
    /// Users send 1–2 messages each at the same time.
    Burst(Vec<(usize, u8)>),
}

#[derive(Debug, Clone, Default)]
struct UserModel {
    logged_in: bool,
    conns: usize,
    runs: u64,
    threads: u64,
}

#[derive(Debug, Clone)]
struct Model {
    users: Vec<UserModel>,
}

struct IsolationModel;

fn via() -> impl Strategy<Value = Via> {
    prop_oneof![
        Just(Via::Header),
        Just(Via::Subprotocol),
        Just(Via::Ticket),
        Just(Via::LbHeader)
    ]
}

fn start() -> impl Strategy<Value = Start> {
    prop_oneof![
        2 => Just(Start::Live),
        1 => (0u8..=100).prop_map(Start::QueryLastSeq),
        1 => (0u8..=100).prop_map(Start::FirstFrameResume),
    ]
}

impl ReferenceStateMachine for IsolationModel {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        (2usize..=EMAILS.len())
            .prop_map(|n| Model {
                users: vec![UserModel::default(); n],
            })
            .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Step> {
        let n = state.users.len();
        let pick = |f: &dyn Fn(&UserModel) -> bool| -> Vec<usize> {
            (0..n).filter(|&i| f(&state.users[i])).collect()
        };
        let logged = pick(&|u| u.logged_in && u.conns < MAX_CONNS);
        let connected = pick(&|u| u.conns > 0);
        let with_threads = pick(&|u| u.threads > 0);

        let mut options: Vec<(u32, BoxedStrategy<Step>)> = vec![
            (2, (0..n).prop_map(Step::Login).boxed()),
            (
                1,
                (0..n, any::<bool>())
                    .prop_map(|(user, unknown)| Step::BadLogin { user, unknown })
                    .boxed(),
            ),
            (
                1,
                (
                    0..n,
                    prop_oneof![
                        Just(BadToken::Garbage),
                        Just(BadToken::WrongSecret),
                        Just(BadToken::RefreshToken),
                        Just(BadToken::Missing)
                    ],
                    via(),
                )
                    .prop_map(|(user, token, via)| Step::BadToken { user, token, via })
                    .boxed(),
            ),
        ];
        if !logged.is_empty() {
            options.push((
                4,
                (prop::sample::select(logged), via(), start(), any::<bool>())
                    .prop_map(|(user, via, start, acks)| Step::Connect {
                        user,
                        via,
                        start,
                        acks,
                    })
                    .boxed(),
            ));
        }
        if !connected.is_empty() {
            let conn = 0..MAX_CONNS;
            let user = prop::sample::select(connected.clone());
            options.push((
                6,
                (user.clone(), conn.clone(), any::<bool>())
                    .prop_map(|(user, conn, continue_thread)| Step::Send {
                        user,
                        conn,
                        continue_thread,
                    })
                    .boxed(),
            ));
            options.push((
                1,
                (user.clone(), conn.clone())
                    .prop_map(|(user, conn)| Step::AckAll { user, conn })
                    .boxed(),
            ));
            options.push((
                2,
                (user.clone(), conn.clone(), 0u8..=100)
                    .prop_map(|(user, conn, pct)| Step::Resume { user, conn, pct })
                    .boxed(),
            ));
            options.push((
                2,
                (user.clone(), conn)
                    .prop_map(|(user, conn)| Step::Disconnect { user, conn })
                    .boxed(),
            ));
            options.push((
                2,
                prop::sample::subsequence(connected.clone(), 1..=connected.len())
                    .prop_flat_map(|users| {
                        let k = users.len();
                        (Just(users), prop::collection::vec(1u8..=2, k))
                    })
                    .prop_map(|(users, counts)| {
                        Step::Burst(users.into_iter().zip(counts).collect())
                    })
                    .boxed(),
            ));
            if !with_threads.is_empty() {
                options.push((
                    1,
                    (user, prop::sample::select(with_threads))
                        .prop_map(|(user, victim)| Step::StealThread { user, victim })
                        .boxed(),
                ));
            }
        }
        prop::strategy::Union::new_weighted(options).boxed()
    }

    fn preconditions(state: &Model, step: &Step) -> bool {
        let n = state.users.len();
        let user = |i: usize| state.users.get(i);
        let has_conn = |i: usize, c: usize| user(i).is_some_and(|u| c < u.conns);
        match step {
            Step::Login(u) | Step::BadLogin { user: u, .. } | Step::BadToken { user: u, .. } => {
                *u < n
            }
            Step::Connect { user: u, .. } => {
                user(*u).is_some_and(|u| u.logged_in && u.conns < MAX_CONNS)
            }
            Step::Send { user, conn, .. }
            | Step::AckAll { user, conn }
            | Step::Resume { user, conn, .. }
            | Step::Disconnect { user, conn } => has_conn(*user, *conn),
            Step::StealThread { user: u, victim } => {
                u != victim && has_conn(*u, 0) && user(*victim).is_some_and(|v| v.threads > 0)
            }
            Step::Burst(list) => {
                let distinct: HashSet<usize> = list.iter().map(|(u, _)| *u).collect();
                !list.is_empty()
                    && distinct.len() == list.len()
                    && list.iter().all(|(u, _)| has_conn(*u, 0))
            }
        }
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        match step {
            Step::Login(u) => state.users[*u].logged_in = true,
            Step::Connect { user, .. } => state.users[*user].conns += 1,
            Step::Disconnect { user, .. } => state.users[*user].conns -= 1,
            Step::Send {
                user,
                continue_thread,
                ..
            } => {
                let u = &mut state.users[*user];
                u.runs += 1;
                if !(*continue_thread && u.threads > 0) {
                    u.threads += 1;
                }
            }
            Step::Burst(list) => {
                for (user, count) in list {
                    let u = &mut state.users[*user];
                    u.runs += u64::from(*count);
                    u.threads += u64::from(*count);
                }
            }
            Step::BadLogin { .. }
            | Step::BadToken { .. }
            | Step::StealThread { .. }
            | Step::AckAll { .. }
            | Step::Resume { .. } => {}
        }
        state
    }
}

// ---------------------------------------------------------------------------------------------
// The system under test: a real server and real clients, checked frame by frame.

struct Conn {
    client: WsClient,
    /// Acknowledge each event as it is read.
    acks: bool,
    /// The highest `seq` first-sent on this connection.
    cursor: u64,
    /// Every `seq` this connection has sent.
    sent: HashSet<u64>,
    /// Set while a late `resume` replays events this connection never sent (older ones).
    replaying: bool,
}

struct UserSut {
    email: &'static str,
    index: usize,
    id: String,
    token: Option<String>,
    conns: Vec<Conn>,
    /// Events on the user's stream as first sent (no `redelivery` mark), by `seq`.
    stream: BTreeMap<u64, Value>,
    /// The newest `seq` the user's stream must have reached.
    head: u64,
    messages: u64,
    /// Thread ids of the user's runs, newest last.
    threads: Vec<String>,
    /// Strings that must never appear in this user's frames: other users' ids, e-mails and
    /// message-marker prefixes.
    foreign: Vec<String>,
}

/// The server and the users' clients.
struct World {
    users: Vec<UserSut>,
    server: Option<TestServer>,
    _services: Option<Isolated>,
}

struct Sut {
    world: World,
    rt: tokio::runtime::Runtime,
}

/// What reading one frame found.
enum Read {
    Event { seq: u64, redelivery: bool },
    Other(Value),
}

fn marker(user: usize, n: u64) -> String {
    format!("mk-{user}-{n}")
}

impl UserSut {
    /// Reads the next frame on connection `ci` and checks it against everything known.
    async fn read(&mut self, ci: usize) -> Read {
        let frame = self.conns[ci]
            .client
            .next()
            .await
            .unwrap_or_else(|| panic!("{}: connection {ci} closed unexpectedly", self.email));
        let text = frame.to_string();
        for needle in &self.foreign {
            assert!(
                !text.contains(needle.as_str()),
                "ISOLATION: {} received a frame mentioning {needle:?}: {text}",
                self.email
            );
        }
        let Some(seq) = frame.get("seq").and_then(Value::as_u64) else {
            return Read::Other(frame);
        };
        let redelivery = frame.get("redelivery").is_some();
        let mut first = frame.clone();
        if let Some(map) = first.as_object_mut() {
            map.remove("redelivery");
        }
        let conn = &mut self.conns[ci];
        if redelivery {
            assert_eq!(frame["redelivery"], true, "{text}");
            assert!(
                conn.sent.contains(&seq),
                "{}: seq {seq} marked redelivery but never sent on this connection",
                self.email
            );
        } else {
            assert!(
                conn.sent.insert(seq),
                "{}: seq {seq} first-sent twice on one connection (cursor {})",
                self.email,
                conn.cursor
            );
            if seq > conn.cursor {
                assert_eq!(
                    seq,
                    conn.cursor + 1,
                    "{}: gap in first sends on a connection",
                    self.email
                );
                conn.cursor = seq;
            } else {
                assert!(
                    conn.replaying,
                    "{}: seq {seq} first-sent below the cursor {} outside a resume",
                    self.email, conn.cursor
                );
            }
        }
        if conn.acks {
            conn.client.send(json!({ "type": "ack", "seq": seq })).await;
        }
        match self.stream.get(&seq) {
            Some(known) => assert_eq!(
                known, &first,
                "{}: seq {seq} differs between sends",
                self.email
            ),
            None => {
                self.stream.insert(seq, first);
            }
        }
        Read::Event { seq, redelivery }
    }

    /// Reads connection `ci` until its cursor reaches `head`; any other frame is a failure.
    async fn sync(&mut self, ci: usize, head: u64) {
        while self.conns[ci].cursor < head {
            if let Read::Other(frame) = self.read(ci).await {
                panic!("{}: unexpected frame {frame}", self.email);
            }
        }
    }

    /// Sends `ping` and reads until its `pong`: the events read on the way, in order, as
    /// `(seq, marked redelivery)`.
    async fn until_pong(&mut self, ci: usize) -> Vec<(u64, bool)> {
        self.conns[ci].client.send(json!({ "type": "ping" })).await;
        let mut seen = Vec::new();
        loop {
            match self.read(ci).await {
                Read::Other(frame) if frame["type"] == "pong" => return seen,
                Read::Other(frame) => panic!("{}: unexpected frame {frame}", self.email),
                Read::Event { seq, redelivery } => seen.push((seq, redelivery)),
            }
        }
    }

    /// Sends `count` messages on connection `ci`, reads until all their runs completed and
    /// checks each run: complete, in order, own marker, result equal to the fixture truth.
    async fn ask(&mut self, ci: usize, count: u64, thread: Option<String>) {
        let mut markers = Vec::new();
        for _ in 0..count {
            self.messages += 1;
            let mark = marker(self.index, self.messages);
            let mut payload = json!({ "content": format!("where am I wasting money? {mark}"), "message_id": mark });
            if let Some(thread) = &thread {
                payload["thread_id"] = json!(thread);
            }
            self.conns[ci]
                .client
                .send(json!({ "type": "user_message", "payload": payload }))
                .await;
            markers.push(mark);
        }
        let from = self.head;
        self.head += 11 * count;
        self.sync(ci, self.head).await;
        let mut runs: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for seq in from + 1..=self.head {
            let event = &self.stream[&seq];
            runs.entry(event["run_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(event.clone());
        }
        assert_eq!(runs.len() as u64, count, "{}: runs {runs:#?}", self.email);
        let mut got_markers = Vec::new();
        for events in runs.values() {
            assert_eq!(
                types(events),
                RUN_EVENT_TYPES,
                "{}: {events:#?}",
                self.email
            );
            if count == 1 {
                assert_complete_run(events);
            }
            assert_result_matches_truth(self.email, &events[10]["payload"]["result"]);
            assert_eq!(
                events[2]["payload"]["parameters"]["user_id"], self.id,
                "{}: the run fetched another user's data",
                self.email
            );
            got_markers.push(
                events[0]["payload"]["client_message_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
            let thread_id = events[0]["thread_id"].as_str().unwrap().to_owned();
            if let Some(thread) = &thread {
                assert_eq!(&thread_id, thread, "{}: thread not continued", self.email);
            } else {
                self.threads.push(thread_id);
            }
        }
        got_markers.sort();
        markers.sort();
        assert_eq!(
            got_markers, markers,
            "{}: runs answer my messages",
            self.email
        );
    }
}

impl World {
    fn server(&self) -> &TestServer {
        self.server.as_ref().expect("server runs")
    }

    async fn connect(&mut self, user: usize, via: Via, start: Start, acks: bool) {
        let server = self.server.as_ref().unwrap();
        let u = &mut self.users[user];
        let token = u.token.clone().expect("logged in");
        let from = match start {
            Start::Live => None,
            Start::QueryLastSeq(pct) | Start::FirstFrameResume(pct) => {
                Some(u.head * u64::from(pct) / 100)
            }
        };
        let mut query = Vec::new();
        let transport = match via {
            Via::Header => Transport::Header(token),
            Via::Subprotocol => Transport::Subprotocol(token),
            Via::LbHeader => Transport::LbPreserved(token),
            Via::Ticket => {
                let ticket = server.ticket(&token).await;
                query.push(format!("ticket={ticket}"));
                Transport::Ticket(ticket)
            }
        };
        if let (Start::QueryLastSeq(_), Some(k)) = (start, from) {
            query.push(format!("last_seq={k}"));
        }
        let mut url = server.ws_url();
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        let client = WsClient::connect_url(&url, transport)
            .await
            .unwrap_or_else(|e| panic!("{} connects via {via:?}: {e}", u.email));
        assert_eq!(
            client.established["user_id"], u.id,
            "ISOLATION: {} connected as someone else: {}",
            u.email, client.established
        );
        assert_eq!(
            client.established["last_seq"], u.head,
            "{}: connection_established.last_seq is the stream head",
            u.email
        );
        u.conns.push(Conn {
            client,
            acks,
            cursor: from.unwrap_or(u.head),
            sent: HashSet::new(),
            replaying: false,
        });
        let ci = u.conns.len() - 1;
        if let (Start::FirstFrameResume(_), Some(k)) = (start, from) {
            u.conns[ci]
                .client
                .send(json!({ "type": "resume", "last_seq": k }))
                .await;
        }
        // Live: the ping is the first frame and arms delivery. Replays: everything after `k`,
        // unmarked and in order, arrives before the pong.
        let seen = u.until_pong(ci).await;
        let want: Vec<(u64, bool)> = (from.unwrap_or(u.head) + 1..=u.head)
            .map(|s| (s, false))
            .collect();
        assert_eq!(seen, want, "{}: replay at connect ({start:?})", u.email);
    }

    async fn bad_token(&mut self, user: usize, kind: BadToken, via: Via) {
        let server = self.server.as_ref().unwrap();
        let u = &self.users[user];
        let token = match kind {
            BadToken::Garbage => Some("not.a.jwt".to_owned()),
            BadToken::WrongSecret => {
                let config = &server.state.config;
                let keys = TokenKeys::new(
                    b"another-secret-that-is-long-enough",
                    &config.jwt_issuer,
                    &config.jwt_audience,
                );
                Some(keys.issue(u.id.parse().unwrap(), u.email, TokenType::Access, 600))
            }
            BadToken::RefreshToken => Some(
                server.login_response(u.email).await["refresh_token"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            BadToken::Missing => None,
        };
        let (transport, url) = match (via, token) {
            (_, None) => (Transport::None, server.ws_url()),
            (Via::Header, Some(t)) => (Transport::Header(t), server.ws_url()),
            (Via::Subprotocol, Some(t)) => (Transport::Subprotocol(t), server.ws_url()),
            (Via::LbHeader, Some(t)) => (Transport::LbPreserved(t), server.ws_url()),
            (Via::Ticket, Some(t)) => {
                let response = server
                    .http
                    .post(server.url("/api/websocket/ticket"))
                    .bearer_auth(&t)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 401, "a ticket for a bad token");
                let url = format!("{}?ticket=forged-ticket-{user}", server.ws_url());
                (Transport::Ticket(String::new()), url)
            }
        };
        match WsClient::connect_url(&url, transport).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{kind:?} via {via:?}");
            }
            Err(e) => panic!("{kind:?} via {via:?}: expected a 401 refusal, got {e}"),
            Ok(client) => panic!(
                "ISOLATION: {kind:?} via {via:?} was accepted: {}",
                client.established
            ),
        }
    }

    async fn steal_thread(&mut self, user: usize, victim: usize) {
        let thread = self.users[victim].threads.last().unwrap().clone();
        let u = &mut self.users[user];
        u.conns[0]
            .client
            .send(json!({ "type": "user_message", "payload": { "content": "let me in", "thread_id": thread } }))
            .await;
        loop {
            match u.read(0).await {
                Read::Other(frame) => {
                    assert_eq!(frame["type"], "error", "{frame}");
                    assert_eq!(frame["payload"]["code"], "THREAD_NOT_FOUND", "{frame}");
                    break;
                }
                Read::Event { redelivery, seq } => {
                    assert!(
                        redelivery,
                        "{}: a run started on a stolen thread (seq {seq})",
                        u.email
                    );
                }
            }
        }
    }

    async fn resume(&mut self, user: usize, ci: usize, pct: u8) {
        let u = &mut self.users[user];
        let k = u.head * u64::from(pct) / 100;
        let sent_before = u.conns[ci].sent.clone();
        u.conns[ci].replaying = true;
        u.conns[ci]
            .client
            .send(json!({ "type": "resume", "last_seq": k }))
            .await;
        let seen = u.until_pong(ci).await;
        u.conns[ci].replaying = false;
        for s in k + 1..=u.head {
            let marked = sent_before.contains(&s);
            assert!(
                seen.contains(&(s, marked)),
                "{}: resume after {k} did not replay seq {s} (redelivery: {marked}); got {seen:?}",
                u.email
            );
        }
        let unmarked: Vec<u64> = seen.iter().filter(|(_, m)| !m).map(|(s, _)| *s).collect();
        assert!(
            unmarked.windows(2).all(|w| w[0] < w[1]) && unmarked.iter().all(|s| *s > k),
            "{}: resume after {k} replayed out of order: {seen:?}",
            u.email
        );
    }

    async fn step(&mut self, step: Step) {
        match step {
            Step::Login(user) => {
                let token = self.server().login(self.users[user].email).await;
                self.users[user].token = Some(token);
            }
            Step::BadLogin { user, unknown } => {
                let email = if unknown {
                    format!("nobody{user}@apex.test")
                } else {
                    self.users[user].email.to_owned()
                };
                let (status, body) = self
                    .server()
                    .post(
                        "/api/auth/login",
                        json!({ "email": email, "password": "wrong-horse" }),
                    )
                    .await;
                assert_eq!(status, 401, "{body}");
                assert_eq!(body["error"]["code"], "INVALID_CREDENTIALS", "{body}");
            }
            Step::Connect {
                user,
                via,
                start,
                acks,
            } => self.connect(user, via, start, acks).await,
            Step::BadToken { user, token, via } => self.bad_token(user, token, via).await,
            Step::Send {
                user,
                conn,
                continue_thread,
            } => {
                let u = &mut self.users[user];
                let thread = u.threads.last().cloned().filter(|_| continue_thread);
                u.ask(conn, 1, thread).await;
            }
            Step::StealThread { user, victim } => self.steal_thread(user, victim).await,
            Step::AckAll { user, conn } => {
                let c = &mut self.users[user].conns[conn];
                let seq = c.cursor;
                c.client.send(json!({ "type": "ack", "seq": seq })).await;
            }
            Step::Resume { user, conn, pct } => self.resume(user, conn, pct).await,
            Step::Disconnect { user, conn } => {
                let mut c = self.users[user].conns.remove(conn);
                let _ = c.client.stream.close(None).await;
            }
            Step::Burst(list) => {
                let asks = self.users.iter_mut().filter_map(|u| {
                    let (_, count) = list.iter().find(|(i, _)| *i == u.index)?;
                    Some(u.ask(0, u64::from(*count), None))
                });
                join_all(asks).await;
            }
        }
        // Every open connection of every user receives every event of its user's stream.
        for u in &mut self.users {
            for ci in 0..u.conns.len() {
                let head = u.head;
                u.sync(ci, head).await;
            }
        }
    }
}

/// The state-machine test; `SERVICES` selects Postgres+Redis instead of the embedded stores.
struct IsolationTest<const SERVICES: bool>;

impl<const SERVICES: bool> StateMachineTest for IsolationTest<SERVICES> {
    type SystemUnderTest = Sut;
    type Reference = IsolationModel;

    fn init_test(model: &Model) -> Sut {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let configure = |c: &mut apex_backend::Config| {
            c.rate_limit_per_sec = 10_000;
            c.redelivery_timeout_ms = 200;
        };
        let (server, services) = rt.block_on(async {
            if SERVICES {
                let urls = service_urls("isolation_props").expect("checked by the test");
                let services = Isolated::new(urls);
                (
                    TestServer::start_on(&services, configure).await,
                    Some(services),
                )
            } else {
                (TestServer::start_with(configure).await, None)
            }
        });
        let n = model.users.len();
        let ids: Vec<String> = rt.block_on(join_all(EMAILS[..n].iter().map(|email| {
            let server = &server;
            async move {
                server.login_response(email).await["user"]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
        })));
        let users = (0..n)
            .map(|i| UserSut {
                email: EMAILS[i],
                index: i,
                id: ids[i].clone(),
                token: None,
                conns: Vec::new(),
                stream: BTreeMap::new(),
                head: 0,
                messages: 0,
                threads: Vec::new(),
                foreign: (0..n)
                    .filter(|&j| j != i)
                    .flat_map(|j| [ids[j].clone(), EMAILS[j].to_owned(), format!("mk-{j}-")])
                    .collect(),
            })
            .collect();
        Sut {
            world: World {
                users,
                server: Some(server),
                _services: services,
            },
            rt,
        }
    }

    fn apply(mut sut: Sut, _model: &Model, step: Step) -> Sut {
        let world = &mut sut.world;
        sut.rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(60), world.step(step)).await
            })
            .expect("a step finishes within 60 s");
        sut
    }

    fn check_invariants(sut: &Sut, model: &Model) {
        let mut threads = HashSet::new();
        let mut runs = HashSet::new();
        for (u, m) in sut.world.users.iter().zip(&model.users) {
            assert_eq!(u.token.is_some(), m.logged_in, "{}", u.email);
            assert_eq!(u.conns.len(), m.conns, "{}", u.email);
            assert_eq!(
                u.head,
                11 * m.runs,
                "{}: every message made one run",
                u.email
            );
            assert!(
                u.stream.keys().copied().eq(1..=u.head),
                "{}: the stream is 1..={} without gaps or extras: {:?}",
                u.email,
                u.head,
                u.stream.keys().collect::<Vec<_>>()
            );
            for c in &u.conns {
                assert_eq!(c.cursor, u.head, "{}: a connection fell behind", u.email);
            }
            for t in &u.threads {
                assert!(
                    threads.insert(t.clone()),
                    "ISOLATION: thread {t} shared by users"
                );
            }
            let own_runs: HashSet<&str> = u
                .stream
                .values()
                .map(|e| e["run_id"].as_str().unwrap())
                .collect();
            assert_eq!(own_runs.len() as u64, m.runs, "{}", u.email);
            for r in own_runs {
                assert!(
                    runs.insert(r.to_owned()),
                    "ISOLATION: run {r} on two users' streams"
                );
            }
        }
    }

    fn teardown(mut sut: Sut, _model: Model) {
        let server = sut.world.server.take().unwrap();
        let users = std::mem::take(&mut sut.world.users);
        sut.rt.block_on(async move {
            drop(users);
            server.stop().await;
        });
    }
}

fn proptest_config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default_cases),
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    }
}

#[test]
fn isolation_and_delivery_hold_on_embedded_stores() {
    let config = proptest_config(24);
    proptest!(config.clone(), |((initial, steps, seen) in IsolationModel::sequential_strategy(1..24))| {
        IsolationTest::<false>::test_sequential(config.clone(), initial, steps, seen);
    });
}

#[test]
fn isolation_and_delivery_hold_on_postgres_and_redis() {
    if service_urls("isolation_and_delivery_hold_on_postgres_and_redis").is_none() {
        return;
    }
    let config = proptest_config(8);
    proptest!(config.clone(), |((initial, steps, seen) in IsolationModel::sequential_strategy(1..24))| {
        IsolationTest::<true>::test_sequential(config.clone(), initial, steps, seen);
    });
}
