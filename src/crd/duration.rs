//! Durations as people write them in manifests (`90s`, `5m`, `2h`, `1h30m`), the format of
//! Go's `time.ParseDuration` that Kubernetes users already know from other APIs.

use std::{fmt, str::FromStr, time::Duration as StdDuration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The pattern the API server enforces; [`Duration::from_str`] accepts exactly this language.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// A non-negative span of time written like `30s`, `5m`, `2h` or `1h30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(StdDuration);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid duration {input:?}: expected a number with a unit (ms, s, m, h), e.g. \"90s\", \"5m\" or \"1h30m\""
)]
pub struct ParseDurationError {
    input: String,
}

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(StdDuration::from_secs(secs))
    }

    pub const fn as_std(self) -> StdDuration {
        self.0
    }
}

impl From<StdDuration> for Duration {
    fn from(value: StdDuration) -> Self {
        Self(value)
    }
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || ParseDurationError {
            input: input.to_owned(),
        };
        if input.is_empty() {
            return Err(error());
        }
        let mut rest = input;
        let mut total = StdDuration::ZERO;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(error)?;
            let (number, after_number) = rest.split_at(number_len);
            let unit_len = after_number
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(after_number.len());
            let (unit, after_unit) = after_number.split_at(unit_len);
            let well_formed = !number.is_empty()
                && !number.starts_with('.')
                && !number.ends_with('.')
                && number.matches('.').count() <= 1;
            if !well_formed {
                return Err(error());
            }
            let value: f64 = number.parse().map_err(|_| error())?;
            let unit_secs = match unit {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(error()),
            };
            total += StdDuration::try_from_secs_f64(value * unit_secs).map_err(|_| error())?;
            rest = after_unit;
        }
        Ok(Self(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis == 0 {
            return f.write_str("0s");
        }
        let (hours, rest) = (millis / 3_600_000, millis % 3_600_000);
        let (minutes, rest) = (rest / 60_000, rest % 60_000);
        let (seconds, millis) = (rest / 1000, rest % 1000);
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        if seconds > 0 {
            write!(f, "{seconds}s")?;
        }
        if millis > 0 {
            write!(f, "{millis}ms")?;
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_units_people_write() {
        let cases = [
            ("0s", 0),
            ("250ms", 250),
            ("90s", 90_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("1h30m", 5_400_000),
            ("1.5h", 5_400_000),
            ("1m0.5s", 60_500),
        ];
        for (text, millis) in cases {
            let parsed: Duration = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed.as_std().as_millis(), millis, "{text}");
        }
    }

    #[test]
    fn rejects_what_the_api_server_pattern_rejects() {
        for text in [
            "", "5", "m", "5 m", "-5m", "5d", "1.m", ".5s", "1..5s", "5M", "1h 30m",
        ] {
            assert!(
                text.parse::<Duration>().is_err(),
                "{text:?} should be rejected"
            );
        }
    }

    #[test]
    fn displays_in_canonical_form_and_round_trips() {
        for (text, shown) in [
            ("90s", "1m30s"),
            ("2h", "2h"),
            ("0s", "0s"),
            ("1500ms", "1s500ms"),
        ] {
            let parsed: Duration = text.parse().unwrap();
            assert_eq!(parsed.to_string(), shown);
            assert_eq!(shown.parse::<Duration>().unwrap(), parsed);
        }
    }

    #[test]
    fn serde_uses_the_text_form() {
        let parsed: Duration = serde_json::from_str("\"5m\"").unwrap();
        assert_eq!(parsed, Duration::from_secs(300));
        assert_eq!(serde_json::to_string(&parsed).unwrap(), "\"5m\"");
        assert!(serde_json::from_str::<Duration>("\"soon\"").is_err());
    }
}
