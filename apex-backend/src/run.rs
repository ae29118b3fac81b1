//! One agent run: the pipeline's events on the user's stream, persisted as it goes.
//!
//! A run belongs to the user, not to the connection that asked for it: it keeps going when the
//! connection drops, and its events wait on the user's stream for `resume`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::agents::data_helper::fetch_usage_data;
use crate::agents::optimizer::analyze_costs;
use crate::agents::report::generate_report;
use crate::bus::BusError;
use crate::metrics::RunOutcome;
use crate::protocol::{ErrorCode, Event, EventDraft, EventType};
use crate::sabotage::Sabotage;
use crate::state::{AppState, RunSlot};
use crate::store::{MessageRecord, Role, RunRecord, RunStatus, StoreError, UserRecord};

/// Agent names as they appear in `agent_name`.
pub const SUPERVISOR: &str = "supervisor";
pub const DATA_HELPER: &str = "data_helper";
pub const OPTIMIZER: &str = "optimizer";
pub const REPORT_GENERATOR: &str = "report_generator";

/// A run that was accepted.
#[derive(Debug, Clone, Copy)]
pub struct RunStarted {
    pub run_id: Uuid,
    pub thread_id: Uuid,
}

/// A run that was refused before it started; becomes an error frame.
#[derive(Debug)]
pub struct RunRefused {
    pub code: ErrorCode,
    pub message: String,
}

impl RunRefused {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for RunRefused {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failed while starting a run");
        Self::new(
            ErrorCode::ServiceUnavailable,
            "the message could not be stored; try again",
        )
    }
}

/// Why a run (or one of its events) did not make it.
#[derive(Debug, thiserror::Error)]
pub enum RunFailure {
    #[error("interrupted by server shutdown")]
    Interrupted,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl RunContext {
    fn take_log(&self) -> Vec<Arc<Event>> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

struct RunContext {
    /// Events emitted but not yet on the stream; appended together when the run next waits
    /// on anything else ([`flush`]).
    queued: std::sync::Mutex<Vec<EventDraft>>,
    /// Events published but not yet in the store's log; written at each checkpoint.
    log: std::sync::Mutex<Vec<Arc<Event>>>,
    user_id: Uuid,
    email: String,
    run_id: Uuid,
    thread_id: Uuid,
    content: String,
    client_message_id: Option<String>,
    /// Another user's last message (only under `leak-text` sabotage).
    other: Option<(Uuid, String)>,
}

/// Accepts a user message: stores it and starts its run in the background.
pub async fn start(
    state: &AppState,
    user: &UserRecord,
    content: String,
    thread_id: Option<Uuid>,
    client_message_id: Option<String>,
) -> Result<RunStarted, RunRefused> {
    if state.is_draining() {
        return Err(RunRefused::new(
            ErrorCode::ShuttingDown,
            "the server is shutting down; reconnect and resend",
        ));
    }
    let slot = state.try_run_slot(user.id).ok_or_else(|| {
        RunRefused::new(
            ErrorCode::TooManyRuns,
            format!(
                "at most {} runs may be in flight per user",
                state.config.max_runs_per_user
            ),
        )
    })?;
    let thread_id = thread_id.unwrap_or_else(Uuid::new_v4);
    let run_id = Uuid::new_v4();
    let run = RunRecord {
        id: run_id,
        user_id: user.id,
        thread_id,
        server_id: state.server_id.clone(),
        status: RunStatus::Running,
        result: None,
    };
    let message = MessageRecord {
        id: Uuid::new_v4(),
        thread_id,
        user_id: user.id,
        run_id: Some(run_id),
        role: Role::User,
        content: content.clone(),
    };
    if !state.store.begin_run(run, message).await? {
        return Err(RunRefused::new(ErrorCode::ThreadNotFound, "no such thread"));
    }
    let other = match state.sabotage {
        Some(Sabotage::LeakText) => state.sabotage_state.exchange(user.id, &content),
        _ => None,
    };
    let context = RunContext {
        queued: std::sync::Mutex::default(),
        log: std::sync::Mutex::default(),
        user_id: user.id,
        email: user.email.clone(),
        run_id,
        thread_id,
        content,
        client_message_id,
        other,
    };
    state.runs.spawn(execute(state.clone(), slot, context));
    Ok(RunStarted { run_id, thread_id })
}

async fn execute(state: AppState, _slot: RunSlot, run: RunContext) {
    let started = Instant::now();
    state.metrics.run(SUPERVISOR, RunOutcome::Started);
    let mut partial = Map::new();
    let outcome = tokio::select! {
        outcome = pipeline(&state, &run, &mut partial) => outcome,
        () = state.runs_cancel.cancelled() => Err(RunFailure::Interrupted),
    };
    let Err(failure) = outcome else {
        state.metrics.run(SUPERVISOR, RunOutcome::Completed);
        state.metrics.journey(started.elapsed());
        return;
    };
    let (status, code) = match failure {
        RunFailure::Interrupted => {
            state.metrics.run(SUPERVISOR, RunOutcome::Interrupted);
            (RunStatus::Interrupted, "RUN_INTERRUPTED")
        }
        _ => {
            state.metrics.run(SUPERVISOR, RunOutcome::Failed);
            (RunStatus::Failed, "RUN_FAILED")
        }
    };
    tracing::warn!(run_id = %run.run_id, error = %failure, "run did not complete");
    // Events emitted before the failure are delivered before the error (the queue is empty
    // unless the failure cut a step short between an emit and the next wait).
    if let Err(e) = flush(&state, &run).await {
        tracing::error!(run_id = %run.run_id, error = %e, "could not deliver the run's last events");
    }
    let partial = Value::Object(partial);
    if let Err(e) = state
        .store
        .append_events(run.user_id, &run.take_log())
        .await
    {
        tracing::error!(run_id = %run.run_id, error = %e, "could not log the run's events");
    }
    if let Err(e) = state
        .store
        .finish_run(run.run_id, status, Some(partial.clone()))
        .await
    {
        tracing::error!(run_id = %run.run_id, error = %e, "could not record the run's outcome");
    }
    let payload =
        json!({ "code": code, "message": failure.to_string(), "partial_results": partial });
    let event = draft(&run, EventType::AgentError, SUPERVISOR, payload);
    if let Err(e) = publish_durable(&state, run.user_id, event).await {
        tracing::error!(run_id = %run.run_id, error = %e, "could not tell the user the run failed");
    }
}

/// Puts an event on the user's stream: a `seq` from the bus, logged in the store, then
/// delivered. A store failure still delivers the event (the bus retains it) but is reported.
pub async fn publish_durable(
    state: &AppState,
    user_id: Uuid,
    draft: EventDraft,
) -> Result<(), RunFailure> {
    let event = state.bus.append(user_id, draft).await?;
    let logged = state
        .store
        .append_events(user_id, std::slice::from_ref(&event))
        .await;
    state.bus.fan_out(user_id, &event).await?;
    logged.map_err(RunFailure::from)
}

/// Writes the run's queued events to the store's log and its partial results.
async fn checkpoint(
    state: &AppState,
    run: &RunContext,
    partial: Option<Value>,
) -> Result<(), RunFailure> {
    let queued = run.take_log();
    state
        .store
        .checkpoint_run(run.run_id, run.user_id, &queued, partial)
        .await?;
    Ok(())
}

/// Marks interrupted the runs this instance owned before a restart and the runs of instances
/// that stopped beating, and tells each user on their stream. `restarted` only before this
/// instance serves: afterwards its runs are live ones.
pub async fn interrupt_orphaned_runs(
    state: &AppState,
    restarted: bool,
) -> Result<usize, StoreError> {
    let runs = state
        .store
        .interrupt_orphaned_runs(&state.server_id, restarted, state.config.run_stale_after())
        .await?;
    for run in &runs {
        state.metrics.run(SUPERVISOR, RunOutcome::Interrupted);
        tracing::warn!(run_id = %run.id, owner = %run.server_id, "run orphaned by its instance: marked interrupted");
        let payload = json!({
            "code": "RUN_INTERRUPTED",
            "message": "the instance running this request stopped before it finished",
            "partial_results": run.result.clone().unwrap_or(Value::Null),
        });
        let draft = EventDraft {
            kind: EventType::AgentError,
            run_id: run.id,
            thread_id: run.thread_id,
            agent_name: SUPERVISOR.to_owned(),
            payload,
        };
        if let Err(e) = publish_durable(state, run.user_id, draft).await {
            tracing::error!(run_id = %run.id, error = %e, "could not tell the user about the interrupted run");
        }
    }
    Ok(runs.len())
}

fn draft(run: &RunContext, kind: EventType, agent_name: &str, payload: Value) -> EventDraft {
    EventDraft {
        kind,
        run_id: run.run_id,
        thread_id: run.thread_id,
        agent_name: agent_name.to_owned(),
        payload,
    }
}

/// Emits one event, after the configured think time. It is queued, and appended and delivered
/// with the events emitted right after it when the run next waits on anything but the bus
/// ([`flush`]): events emitted back to back cost one round trip to the bus together, and no
/// event waits while the run waits on something else.
async fn emit(
    state: &AppState,
    run: &RunContext,
    kind: EventType,
    agent: &str,
    payload: Value,
) -> Result<(), RunFailure> {
    think(state, run, kind).await?;
    run.queued
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(draft(run, kind, agent, payload));
    Ok(())
}

fn take_queued(run: &RunContext) -> Vec<EventDraft> {
    std::mem::take(&mut *run.queued.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Appends the queued events to the stream as one block and delivers them (one step), and
/// logs them for the next checkpoint. Called before every wait that is not the bus's.
async fn flush(state: &AppState, run: &RunContext) -> Result<(), RunFailure> {
    let drafts = take_queued(run);
    if drafts.is_empty() {
        return Ok(());
    }
    let deliver = drafts.len();
    let events = state.bus.append_all(run.user_id, drafts, deliver).await?;
    run.log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(events);
    Ok(())
}

/// The configured pause before every event but the first; what was emitted before it is
/// delivered first.
async fn think(state: &AppState, run: &RunContext, kind: EventType) -> Result<(), RunFailure> {
    let think = state.config.think_time();
    if !think.is_zero() && kind != EventType::AgentStarted {
        flush(state, run).await?;
        tokio::time::sleep(think).await;
    }
    Ok(())
}

/// CPU time the calling thread has run, from the OS's per-thread CPU clock (counted to the
/// nanosecond, the running slice included); `None` where there is none.
fn thread_cpu() -> Option<Duration> {
    #[cfg(unix)]
    {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Some(Duration::new(
            u64::try_from(now.tv_sec).ok()?,
            u32::try_from(now.tv_nsec).ok()?,
        ))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The CPU the agents' own work took: the analysis code runs without awaiting, so one thread
/// runs each piece from start to end and its CPU clock counts it. Waits (think time, storage,
/// delivery) are not compute and are not counted. `None` once a reading failed.
struct CpuMeter(Option<Duration>);

impl CpuMeter {
    fn measure<T>(&mut self, work: impl FnOnce() -> T) -> T {
        let before = thread_cpu();
        let out = work();
        self.0 = match (self.0, before, thread_cpu()) {
            (Some(total), Some(before), Some(after)) => Some(total + after.saturating_sub(before)),
            _ => None,
        };
        out
    }
}

/// One agent's step: thinking, tool_executing, the tool itself, tool_completed.
async fn step<T>(
    state: &AppState,
    run: &RunContext,
    agent: &str,
    mut thought: String,
    tool: &str,
    parameters: Value,
    work: impl AsyncFnOnce() -> Result<(T, Value), RunFailure>,
) -> Result<T, RunFailure> {
    let sabotage = state.sabotage;
    if sabotage == Some(Sabotage::LeakText)
        && agent == REPORT_GENERATOR
        && let Some((_, text)) = &run.other
    {
        thought = format!("{thought} (like the question \"{text}\")");
    }
    let thinking = json!({ "thought": thought });
    emit(
        state,
        run,
        EventType::AgentThinking,
        agent,
        thinking.clone(),
    )
    .await?;
    if sabotage == Some(Sabotage::CrossUser)
        && agent == REPORT_GENERATOR
        && let Some(other) = state.run_slots.other_active(run.user_id)
    {
        let event = state
            .bus
            .append(other, draft(run, EventType::AgentThinking, agent, thinking))
            .await?;
        state.bus.fan_out(other, &event).await?;
    }
    let executing = json!({ "tool_name": tool, "parameters": parameters });
    let swap = sabotage == Some(Sabotage::SwapEvents) && agent == DATA_HELPER;
    if !swap {
        emit(
            state,
            run,
            EventType::ToolExecuting,
            agent,
            executing.clone(),
        )
        .await?;
    }
    // The tool may take a while: what the step said so far is delivered first.
    flush(state, run).await?;
    if sabotage == Some(Sabotage::HangAfterToolExecuting) && agent == OPTIMIZER {
        std::future::pending::<()>().await;
    }
    let started = Instant::now();
    let (output, summary) = work().await?;
    let payload = json!({
        "tool_name": tool,
        "status": "success",
        "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
        "result": summary,
    });
    if !(sabotage == Some(Sabotage::DropEvent) && agent == OPTIMIZER) {
        emit(state, run, EventType::ToolCompleted, agent, payload).await?;
    }
    if swap {
        emit(state, run, EventType::ToolExecuting, agent, executing).await?;
    }
    Ok(output)
}

async fn pipeline(
    state: &AppState,
    run: &RunContext,
    partial: &mut Map<String, Value>,
) -> Result<(), RunFailure> {
    let started = Instant::now();
    let mut cpu = CpuMeter(Some(Duration::ZERO));
    emit(
        state,
        run,
        EventType::AgentStarted,
        SUPERVISOR,
        json!({
            "status": "started",
            "pipeline": [DATA_HELPER, OPTIMIZER, REPORT_GENERATOR],
            "client_message_id": run.client_message_id,
        }),
    )
    .await?;

    let (records, summary) = step(
        state,
        run,
        DATA_HELPER,
        "Loading your AI API usage records and summarising spend per model".into(),
        "fetch_usage_data",
        json!({ "user_id": run.user_id }),
        async || {
            let records = state.store.usage(run.user_id).await?;
            let summary = cpu.measure(|| fetch_usage_data(&records));
            // Durable before tool_completed says so.
            partial.insert(
                DATA_HELPER.into(),
                serde_json::to_value(&summary).unwrap_or_default(),
            );
            checkpoint(state, run, Some(Value::Object(partial.clone()))).await?;
            let brief = json!({
                "total_calls": summary.total_calls,
                "window_days": summary.window_days,
                "total_monthly_cost_usd": summary.total_monthly_cost_usd,
                "models": summary.models.len(),
            });
            Ok(((records, summary), brief))
        },
    )
    .await?;

    let analysis = step(
        state, run, OPTIMIZER,
        format!("Checking {} calls for cacheable repeats and premium calls a cheaper tier serves", summary.total_calls),
        "analyze_costs",
        json!({ "rules": ["response_cache", "model_downgrade"], "small_prompt_max_tokens": state.pricing.small_prompt_max_tokens }),
        async || {
            let analysis = cpu.measure(|| analyze_costs(&records, &state.pricing, summary.monthly_factor));
            partial.insert(OPTIMIZER.into(), serde_json::to_value(&analysis).unwrap_or_default());
            checkpoint(state, run, Some(Value::Object(partial.clone()))).await?;
            let brief = json!({
                "recommendations": analysis.recommendations.len(),
                "projected_monthly_savings_usd": analysis.projected_monthly_savings_usd,
            });
            Ok((analysis, brief))
        },
    )
    .await?;

    let report = step(
        state,
        run,
        REPORT_GENERATOR,
        "Writing the report with the numbers and their trade-offs".into(),
        "generate_report",
        json!({ "format": "markdown" }),
        async || {
            let report =
                cpu.measure(|| generate_report(&run.email, &run.content, &summary, &analysis));
            let brief =
                json!({ "format": "markdown", "characters": report.markdown.chars().count() });
            Ok((report, brief))
        },
    )
    .await?;

    let result = serde_json::to_value(&report.result).unwrap_or_default();
    let mut usage = json!({
        "steps": 3,
        "tool_calls": 3,
        "records_analyzed": summary.total_calls,
        // The agents are deterministic code, not LLM calls: no tokens are spent.
        "llm_tokens": 0,
    });
    // Compute is CPU: a figure that counted think time or waits would call a slow backend
    // expensive. Absent rather than guessed where the OS gives no thread CPU clock.
    if let Some(cpu) = cpu.0 {
        usage["compute_ms"] = json!(cpu.as_secs_f64() * 1000.0);
    }
    let answer = MessageRecord {
        id: Uuid::new_v4(),
        thread_id: run.thread_id,
        user_id: run.user_id,
        run_id: Some(run.run_id),
        role: Role::Assistant,
        content: report.markdown.clone(),
    };
    let mut shown = result.clone();
    if state.sabotage == Some(Sabotage::CorruptNumbers) {
        for key in ["total_monthly_cost_usd", "projected_monthly_savings_usd"] {
            if let Some(v) = shown[key].as_f64() {
                shown[key] = json!(v * 1.5);
            }
        }
    }
    let payload = json!({
        "status": "completed",
        "final_response": report.markdown,
        "result": shown,
        "usage": usage,
        "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
    });
    think(state, run, EventType::AgentCompleted).await?;
    if state.sabotage == Some(Sabotage::DelayEvent) {
        flush(state, run).await?;
        tokio::time::sleep(std::time::Duration::from_millis(
            state.config.sabotage_delay_ms,
        ))
        .await;
    }
    // The last tool_completed (if still queued), delivered, and agent_completed, not yet:
    // one append.
    let mut drafts = take_queued(run);
    let deliver = drafts.len();
    drafts.push(draft(run, EventType::AgentCompleted, SUPERVISOR, payload));
    let mut appended = state.bus.append_all(run.user_id, drafts, deliver).await?;
    let Some(completed) = appended.pop() else {
        return Err(BusError::Unavailable("agent_completed was not appended".into()).into());
    };
    let mut events = run.take_log();
    events.extend(appended);
    events.push(completed.clone());
    // Durable before the user is told: when agent_completed arrives, the answer, the result
    // and every event of the run are stored.
    state.store.complete_run(answer, result, &events).await?;
    state.bus.fan_out(run.user_id, &completed).await?;
    Ok(())
}
