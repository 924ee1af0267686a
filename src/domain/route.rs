//! Routes: which providers a message goes through, in order. The first route whose every condition
//! holds takes the message; a route without conditions takes whatever reaches it. The same rules decide
//! at accept (a message no route takes is refused there, never queued) and at delivery.

use super::{Envelope, Stream};

/// The facts about a message that routes match on.
#[derive(Debug, Clone, Copy)]
pub struct RouteFacts<'a> {
    /// The domain of the author's address.
    pub sender_domain: &'a str,
    /// The message's stream (`transactional` or `broadcast`).
    pub stream: &'a str,
    /// The caller that sent it.
    pub caller: &'a str,
    /// Its tags.
    pub tags: &'a [String],
    /// The domain of its first recipient.
    pub recipient_domain: Option<&'a str>,
}

impl<'a> RouteFacts<'a> {
    /// The facts of a message with this envelope in `stream`, from `caller`, tagged `tags`.
    pub fn of(envelope: &'a Envelope, stream: Stream, caller: &'a str, tags: &'a [String]) -> Self {
        let first = envelope
            .to
            .iter()
            .chain(&envelope.cc)
            .chain(&envelope.bcc)
            .next();
        Self {
            sender_domain: envelope.from.address.domain(),
            stream: stream.as_str(),
            caller,
            tags,
            recipient_domain: first.map(|mailbox| mailbox.address.domain()),
        }
    }
}

/// The conditions of a route: each one given must hold, by any of its values. Domains, streams and
/// tags compare without regard to case; callers exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteMatch {
    /// Any of these sender domains.
    pub sender_domain: Vec<String>,
    /// Any of these streams.
    pub stream: Vec<String>,
    /// Any of these callers.
    pub caller: Vec<String>,
    /// Any of these tags (on the message).
    pub tag: Vec<String>,
    /// Any of these first-recipient domains.
    pub recipient_domain: Vec<String>,
}

impl RouteMatch {
    /// Whether there is no condition at all (the default route).
    pub fn is_empty(&self) -> bool {
        self.sender_domain.is_empty()
            && self.stream.is_empty()
            && self.caller.is_empty()
            && self.tag.is_empty()
            && self.recipient_domain.is_empty()
    }

    /// Whether every condition holds for `facts`.
    pub fn matches(&self, facts: &RouteFacts<'_>) -> bool {
        let any_of = |values: &[String], fact: &str| {
            values.is_empty() || values.iter().any(|value| value.eq_ignore_ascii_case(fact))
        };
        any_of(&self.sender_domain, facts.sender_domain)
            && any_of(&self.stream, facts.stream)
            && (self.caller.is_empty() || self.caller.iter().any(|caller| caller == facts.caller))
            && (self.tag.is_empty() || facts.tags.iter().any(|tag| any_of(&self.tag, tag)))
            && (self.recipient_domain.is_empty()
                || facts
                    .recipient_domain
                    .is_some_and(|domain| any_of(&self.recipient_domain, domain)))
    }
}

/// One route: its conditions and its providers, by name, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// When it applies.
    pub conditions: RouteMatch,
    /// Provider names, first choice first.
    pub providers: Vec<String>,
}

/// Every route, in order; or, when none is configured, every provider in the order configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    /// The routes as configured (first match wins).
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// No routes: one default route over `providers` in their order (empty: no route at all, and
    /// every message is taken, to wait for a provider or go to the outbox).
    pub fn every(providers: Vec<String>) -> Self {
        if providers.is_empty() {
            return Self::default();
        }
        Self::new(vec![Route {
            conditions: RouteMatch::default(),
            providers,
        }])
    }

    /// Whether routing decides anything (some provider is configured).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// The first route that takes a message with these facts.
    pub fn route(&self, facts: &RouteFacts<'_>) -> Option<&Route> {
        self.routes
            .iter()
            .find(|route| route.conditions.matches(facts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(tags: &'a [String]) -> RouteFacts<'a> {
        RouteFacts {
            sender_domain: "Example.com",
            stream: "transactional",
            caller: "shop",
            tags,
            recipient_domain: Some("gmail.com"),
        }
    }

    fn route(conditions: RouteMatch, provider: &str) -> Route {
        Route {
            conditions,
            providers: vec![provider.to_owned()],
        }
    }

    #[test]
    fn the_first_route_whose_every_condition_holds_takes_the_message() {
        let routes = Routes::new(vec![
            route(
                RouteMatch {
                    sender_domain: vec!["example.com".into()],
                    caller: vec!["billing".into()],
                    ..RouteMatch::default()
                },
                "billing",
            ),
            route(
                RouteMatch {
                    tag: vec!["Reset".into(), "welcome".into()],
                    ..RouteMatch::default()
                },
                "postmark",
            ),
            route(
                RouteMatch {
                    recipient_domain: vec!["GMAIL.com".into()],
                    stream: vec!["transactional".into()],
                    ..RouteMatch::default()
                },
                "gmail",
            ),
            route(RouteMatch::default(), "ses"),
        ]);
        let chosen = |tags: &[String]| routes.route(&facts(tags)).unwrap().providers[0].clone();
        assert_eq!(chosen(&["reset".to_owned()]), "postmark");
        assert_eq!(chosen(&["other".to_owned()]), "gmail");
        let mut other = facts(&[]);
        other.recipient_domain = Some("example.org");
        assert_eq!(routes.route(&other).unwrap().providers, ["ses"]);
        other.caller = "billing";
        assert_eq!(routes.route(&other).unwrap().providers, ["billing"]);
    }

    #[test]
    fn without_a_default_route_a_message_may_match_none() {
        let routes = Routes::new(vec![route(
            RouteMatch {
                stream: vec!["broadcast".into()],
                ..RouteMatch::default()
            },
            "bulk",
        )]);
        assert!(routes.route(&facts(&[])).is_none());
        assert!(Routes::every(Vec::new()).route(&facts(&[])).is_none());
        assert_eq!(
            Routes::every(vec!["a".into(), "b".into()])
                .route(&facts(&[]))
                .unwrap()
                .providers,
            ["a", "b"]
        );
    }
}
