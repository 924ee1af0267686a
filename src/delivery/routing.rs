//! The configured providers and the routes over them: which provider a message goes to now.

use std::sync::Arc;
use std::time::Duration;

use super::breaker::Admission;
use super::transport::Provider;
use crate::domain::{RouteFacts, RouteMatch, Routes};

/// Every provider of this process, and the routes over them by index.
#[derive(Clone)]
pub struct Providers {
    list: Arc<[Provider]>,
    routes: Arc<[(RouteMatch, Vec<usize>)]>,
}

/// Where a message goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// To this provider (by index).
    Provider(usize),
    /// Nowhere for about this long: every untried provider of its route has its circuit open.
    Wait(Duration),
    /// Nowhere: every provider of its route was tried in this attempt.
    Exhausted,
    /// No route takes it.
    NoRoute,
}

impl Providers {
    /// `list` with `routes` over it by name; an empty `routes` sends everything through every provider
    /// in order. Fails naming a route's provider that is not in `list`.
    pub fn new(list: Vec<Provider>, routes: &Routes) -> Result<Self, String> {
        let every = Routes::every(list.iter().map(|p| p.name().to_owned()).collect());
        let routes = if routes.is_empty() { &every } else { routes };
        let resolved = routes
            .iter()
            .map(|route| {
                let indices = route
                    .providers
                    .iter()
                    .map(|name| {
                        list.iter()
                            .position(|provider| provider.name() == name)
                            .ok_or_else(|| format!("a route names the unknown provider `{name}`"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((route.conditions.clone(), indices))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            list: list.into(),
            routes: resolved.into(),
        })
    }

    /// Every provider, in the order configured.
    pub fn list(&self) -> &[Provider] {
        &self.list
    }

    /// The provider at `index`.
    pub(super) fn get(&self, index: usize) -> &Provider {
        &self.list[index]
    }

    fn route(&self, facts: &RouteFacts<'_>) -> Option<&[usize]> {
        self.routes
            .iter()
            .find(|(conditions, _)| conditions.matches(facts))
            .map(|(_, providers)| providers.as_slice())
    }

    /// The provider a message would go to first, ignoring circuits (a dry run's answer).
    pub fn first_choice(&self, facts: &RouteFacts<'_>) -> Option<&str> {
        self.route(facts)
            .and_then(|route| route.first())
            .map(|index| self.list[*index].name())
    }

    /// The first provider of the message's route, other than those in `tried`, whose circuit lets a
    /// send through now (an open circuit past its cool-down lets this one through as its probe).
    pub fn choose(&self, facts: &RouteFacts<'_>, tried: &[usize]) -> Choice {
        let Some(route) = self.route(facts) else {
            return Choice::NoRoute;
        };
        let mut wait: Option<Duration> = None;
        for index in route.iter().filter(|index| !tried.contains(index)) {
            match self.list[*index].breaker.admit() {
                Admission::Go | Admission::Probe => return Choice::Provider(*index),
                Admission::Wait(rest) => {
                    wait = Some(wait.map_or(rest, |shortest| shortest.min(rest)));
                }
            }
        }
        match wait {
            // Tried ones failed this attempt: that failure is the answer, not a wait.
            Some(wait) if tried.is_empty() => Choice::Wait(wait),
            _ => Choice::Exhausted,
        }
    }
}
