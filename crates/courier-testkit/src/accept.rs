//! The accept loop of the test kit's simple servers ([`WsFront`](crate::WsFront),
//! [`ConnectProxy`](crate::ConnectProxy)): each connection served on a task of its
//! own, everything ended by one cancellation.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Accept connections on `listener` until `shutdown` is cancelled, and serve each
/// with `serve` on a task that the cancellation ends too.
pub(crate) async fn serve_until_cancelled<S, F, Fut>(
    listener: TcpListener,
    shutdown: CancellationToken,
    shared: Arc<S>,
    serve: F,
) where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        let Ok((stream, _)) = accepted else {
            // Out of file descriptors or similar: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let connection = serve(Arc::clone(&shared), stream);
        let token = shutdown.child_token();
        tokio::spawn(async move {
            tokio::select! {
                () = connection => {}
                () = token.cancelled() => {}
            }
        });
    }
}
