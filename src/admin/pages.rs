//! The admin API's page: the live status page (static: it fetches its figures itself).

use http::Response;

use crate::body::{html_page, ProxyBody};

const STATUS_PAGE: &str = include_str!("status.html");
/// The live status page (static: it fetches its figures itself).
pub fn status_page() -> Response<ProxyBody> {
    html_page(STATUS_PAGE.to_owned())
}
