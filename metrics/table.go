package metrics

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vipmux/vipmux/registry"
)

// Causes of a change of a port's active member, as the log shows them.
const (
	// CauseSwitch is an operator's switch (vipmux switch, POST /v1/switch),
	// or any other change that is not automatic.
	CauseSwitch = string(registry.CauseSwitch)
	// CauseFailover is an automatic failover: the active member's health
	// check failed or its lease ran out, and a standby took over.
	CauseFailover = string(registry.CauseFailover)
	// CauseFailback is an automatic failback to a recovered former active
	// ([health] failback).
	CauseFailback = string(registry.CauseFailback)
)

// Change is a change of a binding's active member from one member to
// another.
type Change struct {
	// Key is the binding.
	Key registry.Key
	// From and To are the former and the new active member.
	From, To string
	// Cause is CauseSwitch, CauseFailover or CauseFailback.
	Cause string
	// Why is the new active member's reason, as status shows it.
	Why string
}

// Changes returns the bindings of next whose active member is another
// member than in prev, ordered by IP and port. A binding that gains an
// active member where it had none (a registration) or loses it (a
// deregistration) is no change of this kind. Only the bindings that the
// change touched are looked at (registry.Changed).
func Changes(prev, next *registry.Table) []Change {
	var out []Change
	changed := registry.Changed(prev, next)
	slices.SortFunc(changed, func(a, b *registry.Binding) int {
		if c := a.IP.Compare(b.IP); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	for _, b := range changed {
		to, ok := b.Active()
		if !ok {
			continue
		}
		pb, ok := prev.Binding(b.Key)
		if !ok {
			continue
		}
		from, ok := pb.Active()
		if !ok || from.Name == to.Name {
			continue
		}
		out = append(out, Change{Key: b.Key, From: from.Name, To: to.Name, Cause: cause(to.Cause), Why: to.Reason})
	}
	return out
}

// cause classifies what made a member the new active (registry's
// Member.Cause): failover and failback are automatic, anything else counts
// as a switch.
func cause(c registry.ChangeCause) string {
	switch c {
	case registry.CauseFailover:
		return CauseFailover
	case registry.CauseFailback:
		return CauseFailback
	}
	return CauseSwitch
}

// portChanges are one binding's counts of active-member changes.
type portChanges struct {
	switches, failovers, failbacks uint64
}

// tableCollector exports the table: per port the switches, failovers and
// failbacks that Watch counted, per mode-2 member whether it is active and
// up (unless per is PerMemberNone). A mode-1 member has no such series: it
// is always its binding's active member, and never health-checked.
type tableCollector struct {
	table Table
	per   string

	switches, failovers, failbacks *prometheus.Desc
	active, up                     *prometheus.Desc
	bindings                       *prometheus.Desc

	// mu guards the following field.
	mu      sync.Mutex
	changes map[registry.Key]*portChanges
}

func newTableCollector(t Table, per string) *tableCollector {
	port := []string{labelIP, labelPort}
	member := []string{labelIP, labelPort, labelMember}
	return &tableCollector{
		table: t,
		per:   per,
		switches: prometheus.NewDesc("vipmux_switches_total",
			"Changes of a port's active member by an operator's switch.", port, nil),
		failovers: prometheus.NewDesc("vipmux_failovers_total",
			"Automatic changes of a port's active member to a standby: the active's health check failed or its lease ran out.", port, nil),
		failbacks: prometheus.NewDesc("vipmux_failbacks_total",
			"Automatic changes of a port's active member back to the recovered former active ([health] failback).", port, nil),
		active: prometheus.NewDesc("vipmux_member_active",
			"1 if the mode-2 member is its binding's active member, else 0.", member, nil),
		up: prometheus.NewDesc("vipmux_member_up",
			"1 unless the mode-2 member's health check or lease declared it down.", member, nil),
		bindings: prometheus.NewDesc("vipmux_bindings",
			"Bindings (ip, port) in the table.", nil, nil),
		changes: map[registry.Key]*portChanges{},
	}
}

// observe counts the changes from prev to next and returns them; the
// counts of bindings that next does not have are dropped.
func (c *tableCollector) observe(prev, next *registry.Table) []Change {
	changes := Changes(prev, next)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range changes {
		pc := c.changes[ch.Key]
		if pc == nil {
			pc = &portChanges{}
			c.changes[ch.Key] = pc
		}
		switch ch.Cause {
		case CauseFailover:
			pc.failovers++
		case CauseFailback:
			pc.failbacks++
		default:
			pc.switches++
		}
	}
	for k := range c.changes {
		if _, ok := next.Binding(k); !ok {
			delete(c.changes, k)
		}
	}
	return changes
}

// Describe implements prometheus.Collector.
func (c *tableCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.switches, c.failovers, c.failbacks, c.active, c.up, c.bindings} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *tableCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.table.Table()
	bs := t.Bindings()
	ch <- prometheus.MustNewConstMetric(c.bindings, prometheus.GaugeValue, float64(len(bs)))
	c.mu.Lock()
	counts := make(map[registry.Key]portChanges, len(c.changes))
	for k, pc := range c.changes {
		counts[k] = *pc
	}
	c.mu.Unlock()
	for _, b := range bs {
		if b.Port == 0 {
			continue
		}
		ip, port := b.IP.String(), portLabel(b.Port)
		pc := counts[b.Key]
		ch <- prometheus.MustNewConstMetric(c.switches, prometheus.CounterValue, float64(pc.switches), ip, port)
		ch <- prometheus.MustNewConstMetric(c.failovers, prometheus.CounterValue, float64(pc.failovers), ip, port)
		ch <- prometheus.MustNewConstMetric(c.failbacks, prometheus.CounterValue, float64(pc.failbacks), ip, port)
		if c.per == PerMemberNone {
			continue
		}
		for _, m := range b.Members {
			ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, boolValue(m.State == registry.Active), ip, port, m.Name)
			ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, boolValue(!m.Down), ip, port, m.Name)
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
