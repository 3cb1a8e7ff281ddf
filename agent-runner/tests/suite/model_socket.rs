//! The runner reaches the model through a Unix socket when `CLAWBOX_MODEL_SOCKET` is set, as
//! in a container with networking off: the host's model proxy is a mounted socket there.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use pretty_assertions::assert_eq;
use testkit::{FakeModel, Reply};

use super::harness::Session;

#[tokio::test]
async fn a_turn_over_the_model_socket() {
    let fake = FakeModel::start().await.unwrap();
    fake.push(Reply::text("over the socket"));
    let mut session = Session::new();

    // A relay from the socket to the fake model's port stands in for the host's proxy.
    let socket = session.dir.path().join("model.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let upstream = fake.addr();
    tokio::spawn(async move {
        while let Ok((mut unix, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut tcp = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp).await;
            });
        }
    });
    session.set_env("CLAWBOX_MODEL_SOCKET", socket.to_str().unwrap());
    // Not resolvable: only the socket can carry the request.
    session.set_env("OPENAI_BASE_URL", "http://clawbox-proxy/v1");

    let seq = session.send("hello");
    session.run(&fake).await;

    let replies = session.replies();
    assert_eq!(replies.len(), 1, "{replies:?}\n{}", session.log());
    assert_eq!(replies[0].in_reply_to, Some(seq));
    assert_eq!(replies[0].text(), Some("over the socket"));
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let request = fake.last_request().unwrap();
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.header("authorization"), Some("Bearer sk-session"));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}
