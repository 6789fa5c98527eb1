//! Who may do what: the roles a named credential holds (`auth.credentials` in the gateway's
//! configuration) and which role grants which. The server decides which role each route needs
//! (`switchyard_server::auth`); the rules between roles live here.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A role a credential holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessRole {
    /// Reads the admin API and the dashboard.
    Viewer,
    /// Starts rollouts and pauses, resumes, rolls back or aborts them (and reads).
    Operator,
    /// Approves a step or a conclusion and promotes (and reads).
    Approver,
    /// Posts labels to `/v1/feedback` (optionally only for some models).
    Feedback,
    /// Calls the data plane when `auth.data_plane.require` is on.
    Inference,
    /// Everything, including routing changes by hand.
    Admin,
}

impl AccessRole {
    pub const ALL: [AccessRole; 6] = [
        AccessRole::Viewer,
        AccessRole::Operator,
        AccessRole::Approver,
        AccessRole::Feedback,
        AccessRole::Inference,
        AccessRole::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccessRole::Viewer => "viewer",
            AccessRole::Operator => "operator",
            AccessRole::Approver => "approver",
            AccessRole::Feedback => "feedback",
            AccessRole::Inference => "inference",
            AccessRole::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<AccessRole> {
        AccessRole::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether holding `self` allows what needs `needed`: `admin` allows everything, and
    /// operators and approvers may also read.
    pub fn grants(self, needed: AccessRole) -> bool {
        self == needed
            || self == AccessRole::Admin
            || (needed == AccessRole::Viewer
                && matches!(self, AccessRole::Operator | AccessRole::Approver))
    }
}

impl fmt::Display for AccessRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether any of `held` allows what needs `needed`.
pub fn allows(held: &[AccessRole], needed: AccessRole) -> bool {
    held.iter().any(|r| r.grants(needed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_grants_everything_and_reading_comes_with_operating_and_approving() {
        use AccessRole::*;
        for needed in AccessRole::ALL {
            assert!(Admin.grants(needed));
            assert!(needed.grants(needed));
        }
        assert!(Operator.grants(Viewer) && Approver.grants(Viewer));
        assert!(!Viewer.grants(Operator) && !Viewer.grants(Approver));
        assert!(!Operator.grants(Approver) && !Approver.grants(Operator));
        assert!(!Feedback.grants(Viewer) && !Inference.grants(Viewer));
        assert!(!Feedback.grants(Inference) && !Inference.grants(Feedback));
        assert!(!Operator.grants(Admin) && !Approver.grants(Admin));
        assert!(allows(&[Feedback, Approver], Viewer));
        assert!(!allows(&[], Viewer));
        for r in AccessRole::ALL {
            assert_eq!(AccessRole::parse(r.as_str()), Some(r));
        }
        assert_eq!(AccessRole::parse("root"), None);
    }
}
