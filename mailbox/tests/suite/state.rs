//! Small host-to-container and container-to-host state: session routing, the destination ACL,
//! the runner's self-description.

use mailbox::{
    Activity, Destination, InboundDb, InboundReader, OutboundDb, OutboundReader, Route, RunnerState,
};
use pretty_assertions::assert_eq;

use super::common::{Session, t};

#[test]
fn routing_and_destinations_reach_the_container() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let reader = InboundReader::open(&s.paths.inbound_db()).unwrap();
    assert_eq!(reader.routing().unwrap(), None);
    assert_eq!(reader.destinations().unwrap(), []);

    let mut thread = Route::new("telegram", "chat-1");
    thread.thread_id = Some("7".to_owned());
    host.set_routing(&Route::new("telegram", "chat-1")).unwrap();
    host.set_routing(&thread).unwrap();
    assert_eq!(reader.routing().unwrap(), Some(thread.clone()));
    assert_eq!(host.routing().unwrap(), Some(thread));

    let family = Destination {
        name: "family".to_owned(),
        display_name: Some("Family".to_owned()),
        route: Route::new("telegram", "chat-2"),
    };
    let ops = Destination {
        name: "ops".to_owned(),
        display_name: None,
        route: Route::new("cli", "local"),
    };
    host.set_destinations(&[ops.clone(), family.clone()])
        .unwrap();
    assert_eq!(reader.destinations().unwrap(), [family.clone(), ops]);
    // Replaced, not merged.
    host.set_destinations(std::slice::from_ref(&family))
        .unwrap();
    assert_eq!(host.destinations().unwrap(), [family]);
}

#[test]
fn runner_state_reaches_the_host() {
    let s = Session::new();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let host = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    assert_eq!(host.runner_state().unwrap(), None);

    let starting = RunnerState {
        pid: 4242,
        started_at: t(0),
        activity: Activity::Starting,
        step: 0,
        tool: None,
        tool_timeout_ms: None,
        updated_at: t(0),
    };
    runner.set_runner_state(&starting).unwrap();
    assert_eq!(host.runner_state().unwrap(), Some(starting.clone()));

    let in_tool = RunnerState {
        activity: Activity::Tool,
        step: 3,
        tool: Some("bash".to_owned()),
        tool_timeout_ms: Some(600_000),
        updated_at: t(5),
        ..starting
    };
    runner.set_runner_state(&in_tool).unwrap();
    assert_eq!(host.runner_state().unwrap(), Some(in_tool.clone()));
    assert_eq!(runner.runner_state().unwrap(), Some(in_tool));
}
