//! Seed 000's HTML pages (a sign-up form, a login form, a protected page, a form to send a
//! transaction): each leads to the matching page of the web console, so bookmarks and links
//! its users kept still work.

use axum::response::Redirect;
use axum::routing::get;
use axum::Router;

/// The old pages and where they are now.
pub const PAGES: &[(&str, &str)] = &[
    ("/index.html", "/"),
    ("/signup_form.html", "/#/signup"),
    ("/login_form.html", "/#/login"),
    ("/protected_web.html", "/#/account"),
    ("/send_transaction.html", "/#/account"),
];

/// Permanent redirects (308) from each page of [`PAGES`].
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    PAGES.iter().fold(Router::new(), |router, &(from, to)| router.route(from, get(move || async move { Redirect::permanent(to) })))
}
