//! Where a page's runbook and dashboard links point.

use super::*;

pub fn runbook_url(base: &str, rule: &Rule) -> String {
    format!("{}/{}.md", base.trim_end_matches('/'), rule.runbook)
}

/// The rule's dashboard: a full URL as given, or a path under `base` (none
/// without a base).
pub fn dashboard_url(base: Option<&str>, rule: &Rule) -> Option<String> {
    let dashboard = rule.dashboard.as_deref()?;
    if is_url(dashboard) {
        return Some(dashboard.to_string());
    }
    Some(format!("{}{dashboard}", base?.trim_end_matches('/')))
}

/// Where runbook links point when neither the rule file nor
/// `RUNBOOK_BASE_URL` says: the `runbooks/` folder of the checkout this
/// binary was built from, so a page's link opens on the laptop that runs it.
pub fn default_runbook_base() -> String {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).join("runbooks").display().to_string()
}

/// A runbook base is an http(s) URL or an absolute directory.
pub fn check_runbook_base(base: &str) -> Result<(), String> {
    if (is_url(base) || base.starts_with('/')) && !base.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err(format!("runbook base `{base}` is neither an http(s) URL nor an absolute directory"))
    }
}

/// A path under `dashboard_base_url` (`/d/booking-overview`), or a full URL
/// for a dashboard that lives elsewhere.
pub(super) fn check_dashboard(dashboard: &str) -> Result<(), String> {
    if (dashboard.starts_with('/') || is_url(dashboard)) && !dashboard.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err(format!(
            "dashboard `{dashboard}` must be a path under dashboard_base_url (like /d/booking-overview) or a URL"
        ))
    }
}

pub(super) fn is_url(text: &str) -> bool {
    text.starts_with("http://") || text.starts_with("https://")
}
