//! The web page chat-server serves on its port, built in: `/` (and `/index.html`), its
//! script `/app.js`, and the ringrpc JS client `/ringrpc.js` (`clients/js/ringrpc.js`). The
//! page speaks the same routes and pushes as `chat-client` over `ws://HOST:PORT/ws`.

use ringrpc::ServerBuilder;

/// The page.
pub const INDEX_HTML: &str = include_str!("../web/index.html");
/// Its script.
pub const APP_JS: &str = include_str!("../web/app.js");
/// The ringrpc JS client it imports.
pub const RINGRPC_JS: &str = include_str!("../../../clients/js/ringrpc.js");

/// Adds the page's files to `builder`.
pub fn serve(builder: ServerBuilder) -> ServerBuilder {
    const HTML: &str = "text/html; charset=utf-8";
    const JS: &str = "text/javascript; charset=utf-8";
    builder
        .static_asset("/", HTML, INDEX_HTML)
        .static_asset("/index.html", HTML, INDEX_HTML)
        .static_asset("/app.js", JS, APP_JS)
        .static_asset("/ringrpc.js", JS, RINGRPC_JS)
}
