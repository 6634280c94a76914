//! `POST /v1/chat/completions` in OpenAI's format, answered by the RAG
//! pipeline: the last user message is the question, earlier turns are the
//! conversation, system messages are added to the instructions. With
//! `stream: true` the answer comes as server-sent events
//! (`chat.completion.chunk` objects, then `data: [DONE]`). Both forms carry
//! a `citations` extension (the passages of the prompt) that OpenAI clients ignore.
//! A whole answer is grounded as `/v1/rag`'s is (`[rag] grounding`); a streamed
//! one goes out as it is generated, so it is not.

use std::convert::Infallible;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::mpsc;

use twinflow_models::ChatMessage;
use twinflow_schemas::api::{
    ChatAnswer, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionMessage,
    ChatCompletionRequest, ChatDelta, ChatExtension, ErrorBody, ErrorCode, RagResponse, SearchFilter,
};

use super::rag::{checked_params, checked_question};
use super::{ApiError, json_body};
use crate::app::App;
use twinflow_pipelines::inference::{RagQuestion, ground_response, prepare};

/// Most messages in one request.
pub const MAX_MESSAGES: usize = 256;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The text of a message: a string, or an array of `{type: "text", text}` parts.
fn text_of(message: &ChatCompletionMessage, index: usize) -> Result<String, ApiError> {
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidField, m);
    match &message.content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                (Some("text"), Some(text)) => Ok(text.to_owned()),
                _ => Err(invalid(format!("messages[{index}]: only text content parts are supported"))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.join("\n")),
        _ => Err(invalid(format!("messages[{index}].content must be a string or an array of text parts"))),
    }
}

/// Turns the request into a RAG question, checking everything first.
fn question_of(app: &App, request: &ChatCompletionRequest, model: &str) -> Result<RagQuestion, ApiError> {
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidField, m);
    if let Some(asked) = &request.model
        && !asked.eq_ignore_ascii_case(model)
        // A twin (`<base>+twin-v<N>`) also answers to its base model's name.
        && !model.split_once("+twin-").is_some_and(|(base, _)| asked.eq_ignore_ascii_case(base))
        && !asked.eq_ignore_ascii_case("twinflow")
    {
        return Err(ApiError::new(
            ErrorCode::ModelNotFound,
            format!("model {asked:?} is not served here; use {model:?} (or \"twinflow\")"),
        ));
    }
    if request.n.is_some_and(|n| n != 1) {
        return Err(invalid("only `n: 1` is supported".into()));
    }
    if request.messages.is_empty() || request.messages.len() > MAX_MESSAGES {
        return Err(invalid(format!("`messages` must hold between 1 and {MAX_MESSAGES} messages")));
    }
    let mut system = Vec::new();
    let mut history = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        let text = text_of(message, i)?;
        match message.role.as_str() {
            "system" | "developer" => system.push(text),
            "user" | "assistant" => history.push(ChatMessage::new(&message.role, text)),
            other => {
                return Err(invalid(format!(
                    "messages[{i}].role {other:?} is not supported (system, user, assistant)"
                )));
            }
        }
    }
    let question = match history.pop() {
        Some(last) if last.role == "user" => checked_question(&last.content)?,
        _ => return Err(invalid("the last message must be the user's".into())),
    };
    let stop = match &request.stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.len() <= 4 && items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        Some(_) => return Err(invalid("`stop` must be a string or an array of up to 4 strings".into())),
    };
    let mut params = checked_params(app, request.max_tokens, request.temperature, request.top_p)?;
    params.stop = stop;
    params.seed = request.seed.unwrap_or(0);
    Ok(RagQuestion {
        question,
        history,
        system: (!system.is_empty()).then(|| system.join("\n")),
        filter: SearchFilter::default(),
        k: app.config.rag.k,
        params,
        answer: twinflow_schemas::config::AnswerMode::Generated,
    })
}

fn created() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn twinflow_fields(answer: &RagResponse) -> ChatExtension {
    ChatExtension {
        citations: answer.citations.clone(),
        as_of: answer.as_of,
        timings: answer.timings.clone(),
        grounding: answer.grounding.clone(),
    }
}

/// Handler of `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: ChatCompletionRequest = json_body(&app, body, "")?;
    super::fresh::caught_up(&app, request.min_as_of).await?;
    // Held until the answer (or the stream) is done.
    let slot = app.slots.take(&app.slots.answers, "answer").await?;
    // Building the generator may load or fetch a model: off the async runtime.
    let generator = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || app.generator.get()).await.map_err(ApiError::internal)?
    }
    .map_err(|e| ApiError::new(ErrorCode::GeneratorUnavailable, e))?;
    let model = generator.model_name().to_owned();
    let question = question_of(&app, &request, &model)?;
    let asked = question.question.clone();
    let id = format!("chatcmpl-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    // Retrieval and the prompt first: their errors are still a 4xx, not an event in a 200 stream.
    let prepared = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || prepare(&app.rag(), &question)).await.map_err(ApiError::internal)??
    };
    if !request.stream {
        let app = app.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let passages = prepared.passages();
            let answer = prepared.generate(app.config.rag.max_sentences, &mut |_| ControlFlow::Continue(()))?;
            ground_response(&app.rag(), &asked, &passages, answer)
        })
        .await
        .map_err(ApiError::internal)??;
        let body = ChatCompletion {
            id,
            object: "chat.completion".into(),
            created: created(),
            model,
            choices: vec![ChatChoice {
                index: 0,
                message: ChatAnswer { role: "assistant".into(), content: answer.answer.clone() },
                finish_reason: answer.finish_reason.clone(),
            }],
            usage: answer.usage.clone(),
            twinflow: twinflow_fields(&answer),
        };
        return Ok(Json(body).into_response());
    }

    let include_usage = request
        .other
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // Each event's JSON: a chunk, or an error once the stream has begun.
    let (tx, rx) = mpsc::channel::<String>(64);
    let chunk = {
        let (id, model, created) = (id.clone(), model.clone(), created());
        move |delta: ChatDelta, finish: Option<&str>| ChatCompletionChunk {
            id: id.clone(),
            object: "chat.completion.chunk".into(),
            created,
            model: model.clone(),
            choices: vec![ChatChunkChoice { index: 0, delta, finish_reason: finish.map(str::to_owned) }],
            usage: None,
            twinflow: None,
        }
    };
    let event = |chunk: &ChatCompletionChunk| serde_json::to_string(chunk).unwrap_or_default();
    let max_sentences = app.config.rag.max_sentences;
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let first = ChatDelta { role: Some("assistant".into()), content: Some(String::new()) };
        let _ = tx.blocking_send(event(&chunk(first, None)));
        let mut on_text = |piece: &str| {
            // A closed channel means the client went away: stop generating.
            let piece = ChatDelta { role: None, content: Some(piece.to_owned()) };
            match tx.blocking_send(event(&chunk(piece, None))) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()),
            }
        };
        match prepared.generate(max_sentences, &mut on_text) {
            Ok(answer) => {
                let last = ChatCompletionChunk {
                    twinflow: Some(twinflow_fields(&answer)),
                    ..chunk(ChatDelta::default(), Some(&answer.finish_reason))
                };
                let _ = tx.blocking_send(event(&last));
                if include_usage {
                    let usage = ChatCompletionChunk {
                        choices: Vec::new(),
                        usage: Some(answer.usage.clone()),
                        ..chunk(ChatDelta::default(), None)
                    };
                    let _ = tx.blocking_send(event(&usage));
                }
            }
            Err(e) => {
                let body: ErrorBody = ApiError::from(e).into();
                let _ = tx.blocking_send(serde_json::to_string(&body).unwrap_or_default());
            }
        }
    });
    let events = futures_util::stream::unfold((rx, false), |(mut rx, done)| async move {
        if done {
            return None;
        }
        match rx.recv().await {
            Some(data) => Some((Ok::<Event, Infallible>(Event::default().data(data)), (rx, false))),
            None => Some((Ok(Event::default().data("[DONE]")), (rx, true))),
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}
