//! `twinflow watch "question"`: registers a standing question (or follows
//! `--id`), prints its top-k, then each change of it as commits move it —
//! the chunks that entered (`+`) and left (`−`) — and the answer when it
//! is written again. Ctrl-C forgets the subscription unless `--keep`.

use std::ops::ControlFlow;
use std::sync::Arc;

use twinflow_schemas::api::{EventKind, RagFilters, SubscriptionEvent, SubscriptionRequest};

use super::args::WatchArgs;
use crate::client::Client;
use crate::ui::paint;

pub(super) fn watch(args: &WatchArgs) -> anyhow::Result<()> {
    let client = Arc::new(args.server.client()?);
    let (id, registered) = match (&args.id, &args.question) {
        (Some(id), _) => (id.clone(), false),
        (None, Some(question)) => {
            let request = SubscriptionRequest {
                query: question.clone(),
                k: Some(args.k),
                filters: RagFilters { author: args.author.clone(), ..RagFilters::default() },
                mode: args.mode.clone(),
                answer: args.answer,
                webhook: None,
            };
            let created = client.subscribe(&request)?;
            eprintln!("{} {}", paint::dim("subscription"), paint::id(&created.subscription.id));
            (created.subscription.id, true)
        }
        (None, None) => anyhow::bail!("a question or --id is needed"),
    };
    if registered && !args.keep {
        forget_on_interrupt(client.clone(), id.clone())?;
    }
    client.follow(&id, None, &mut |event| {
        print_event(&event);
        ControlFlow::Continue(())
    })
}

/// On Ctrl-C or SIGTERM: the subscription is deleted, then the process ends.
fn forget_on_interrupt(client: Arc<Client>, id: String) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Registered now, so a signal from here on is caught.
    let mut terminate = {
        let _entered = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?
    };
    std::thread::Builder::new().name("twinflow-watch-signal".into()).spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        });
        if let Err(e) = client.unsubscribe(&id) {
            eprintln!("could not forget subscription {id}: {e}");
        }
        std::process::exit(130);
    })?;
    Ok(())
}

fn print_event(event: &SubscriptionEvent) {
    match event.kind {
        EventKind::Answer => {
            let Some(answer) = &event.answer else { return };
            println!("\n{} {}", paint::strong("answer"), paint::dim(format_args!("as of epoch {}", event.epoch)));
            println!("{}", answer.answer.trim());
            for c in answer.citations.iter().filter(|c| c.cited) {
                println!("  {} {}  {}", paint::id(format_args!("[{}]", c.marker)), paint::id(&c.doc_id), c.title);
            }
        }
        EventKind::Initial | EventKind::Changed => {
            let what = if event.kind == EventKind::Initial { "top-k" } else { "changed" };
            let moved = if event.kind == EventKind::Changed {
                format!("  +{} −{}", event.entered.len(), event.left.len())
            } else {
                String::new()
            };
            println!("\n{} {}{moved}", paint::strong(what), paint::dim(format_args!("epoch {}", event.epoch)));
            for (rank, hit) in event.hits.iter().enumerate() {
                let new = event.kind == EventKind::Changed && event.entered.contains(&hit.chunk_id);
                let mark = if new { paint::good("+") } else { paint::dim(" ") };
                let source = hit.sources.first();
                let doc = source.map_or("", |s| s.doc_id.as_str());
                let title = source.map_or("", |s| s.title.as_str());
                let text: String = hit.text.chars().take(90).collect::<String>().replace('\n', " ");
                println!(
                    "{mark}{:>2}. {}  {}  {}  {}",
                    rank + 1,
                    paint::dim(format_args!("{:.3}", hit.score)),
                    paint::id(doc),
                    paint::strong(title),
                    paint::dim(text)
                );
            }
        }
    }
}
