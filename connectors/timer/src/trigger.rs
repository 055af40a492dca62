//! The `timer` trigger.

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use schemars::JsonSchema;
use serde::Deserialize;
use switchyard_sdk::error::BuildError;
use switchyard_sdk::event::{Event, TriggerEvent};
use switchyard_sdk::{Ack, Trigger, TriggerContext};

/// `type: timer`: an event at every tick of `schedule`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimerTriggerConfig {
    /// Six-field NCRONTAB: `{second} {minute} {hour} {day} {month} {day-of-week}`,
    /// e.g. `0 */5 * * * *` (every five minutes). Times are UTC.
    pub schedule: String,
    /// Also fire once when the gateway starts.
    #[serde(default)]
    pub run_on_startup: bool,
}

/// Parse a six-field NCRONTAB expression.
pub fn parse_schedule(s: &str) -> Result<Cron, String> {
    if s.split_whitespace().count() != 6 {
        return Err(format!(
            "{s:?} is not a six-field NCRONTAB expression ({{second}} {{minute}} {{hour}} {{day}} {{month}} {{day-of-week}})"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Required)
        .build()
        .parse(s)
        .map_err(|e| format!("invalid schedule {s:?}: {e}"))
}

impl TimerTriggerConfig {
    /// Build the trigger task.
    pub fn build(&self, cx: TriggerContext) -> Result<Trigger, BuildError> {
        let cron =
            parse_schedule(&self.schedule).map_err(|m| BuildError::invalid("schedule", m))?;
        let run_on_startup = self.run_on_startup;
        let schedule = self.schedule.clone();
        Ok(Trigger::task(Box::pin(async move {
            cx.health.ready();
            if run_on_startup && !emit(&cx, &schedule, Utc::now(), false).await {
                return Ok(());
            }
            loop {
                // Recompute from the clock after every tick, so a slow send never drifts.
                let now = Utc::now();
                let next = match cron.find_next_occurrence(&now, false) {
                    Ok(n) => n,
                    Err(e) => {
                        return Err(format!("schedule {schedule:?} has no next time: {e}").into())
                    }
                };
                let wait = (next - now).to_std().unwrap_or_default();
                tokio::select! {
                    _ = cx.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
                let past_due = Utc::now() - next > chrono::Duration::seconds(1);
                if !emit(&cx, &schedule, next, past_due).await {
                    return Ok(());
                }
            }
        })))
    }
}

/// Send one tick; false when the gateway is shutting down.
async fn emit(cx: &TriggerContext, schedule: &str, at: DateTime<Utc>, past_due: bool) -> bool {
    let stamp = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let data = serde_json::json!({
        "schedule": schedule,
        "scheduledTime": stamp,
        "isPastDue": past_due,
    });
    let mut event = Event::new(
        stamp,
        Event::source_for(&cx.pipeline, "timer", schedule),
        "switchyard.timer.tick",
    )
    .with_data(
        serde_json::to_vec(&data).expect("json"),
        Some("application/json".into()),
    );
    event.time = at;
    tokio::select! {
        _ = cx.shutdown.cancelled() => false,
        r = cx.events.send(TriggerEvent::new(event, Ack::none())) => r.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike};

    #[test]
    fn six_fields_required() {
        assert!(parse_schedule("*/5 * * * *").is_err());
        assert!(parse_schedule("0 */5 * * * *").is_ok());
        assert!(parse_schedule("0 61 * * * *").is_err());
    }

    #[test]
    fn weekdays_follow_ncrontab() {
        // NCRONTAB day-of-week: 0 = Sunday, 1-5 = Monday to Friday.
        let cron = parse_schedule("0 30 9 * * 1-5").unwrap();
        // 2026-11-28 is a Saturday.
        let sat = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        let next = cron.find_next_occurrence(&sat, false).unwrap();
        assert_eq!(next.weekday(), chrono::Weekday::Mon);
        assert_eq!((next.hour(), next.minute(), next.second()), (9, 30, 0));
    }
}
