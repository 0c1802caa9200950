package registry

// DownCause says what marked a member down. The registry branches on it
// (a health report never brings up a member that its lease marked down);
// Member.Reason says the same to people, with details.
type DownCause string

// Down causes.
const (
	// DownNone is the cause of a member that is up.
	DownNone DownCause = ""
	// DownHealth: its health check failed, by probe or by a client
	// connection's failed dial (SetHealth). A passing check, a
	// registration or health.Release brings it up.
	DownHealth DownCause = "health"
	// DownLease: its lease ran out (Expire). Only a renewal or a new
	// registration brings it up; health reports leave it down.
	DownLease DownCause = "lease"
)

// ChangeCause says what last changed a member's State or Down. Like
// DownCause it is for programs (metrics, health); Member.Reason is for
// people.
type ChangeCause string

// Change causes.
const (
	// CauseRegister: a registration (Register, RegisterBatch) set the
	// member's state, or brought it up.
	CauseRegister ChangeCause = "register"
	// CauseSwitch: an operator's switch (Switch) made the member active,
	// or made it a standby.
	CauseSwitch ChangeCause = "switch"
	// CauseHealth: a health report (SetHealth) marked the member down or
	// up.
	CauseHealth ChangeCause = "health"
	// CauseExpiry: the member's lease ran out (Expire).
	CauseExpiry ChangeCause = "expiry"
	// CauseRenew: a renewal (Renew) brought up a member that its lease
	// had marked down.
	CauseRenew ChangeCause = "renew"
	// CauseFailover: automatic failover made the member active (a
	// standby), or demoted it (the active that went down).
	CauseFailover ChangeCause = "failover"
	// CauseFailback: automatic failback ([health] failback) made the
	// recovered former active active again, or demoted the member that
	// had replaced it.
	CauseFailback ChangeCause = "failback"
)

// downCauseOf infers the cause of a member restored down from a state file
// written before DownCause existed, from its Reason.
func downCauseOf(m Member) DownCause {
	switch {
	case !m.Down:
		return DownNone
	case m.DownCause != DownNone:
		return m.DownCause
	case m.Reason == reasonLease:
		return DownLease
	}
	return DownHealth
}
