package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vipmux/vipmux/dispatch"
	"github.com/vipmux/vipmux/registry"
)

// Refusal reasons, the values of the reason label of
// vipmux_connections_refused_total.
const (
	// ReasonNoActiveMember: no binding, or no active healthy member; the
	// series has member="".
	ReasonNoActiveMember = "no_active_member"
	// ReasonBackendRefused: the backend refused the connection or could
	// not be reached.
	ReasonBackendRefused = "backend_refused"
	// ReasonDialTimeout: the backend did not answer within [dispatch]
	// dial_timeout.
	ReasonDialTimeout = "dial_timeout"
	// ReasonMaxConnections: [dispatch] max_connections connections were
	// open already.
	ReasonMaxConnections = "max_connections"
	// ReasonSourceLimit: the client's source address had [dispatch]
	// max_in_flight_per_source handshakes in flight already; a reason of
	// vipmux_connections_dropped_total (no RST: the SYN is dropped).
	ReasonSourceLimit = "source_limit"
)

// connCollector exports dispatch's per-member connection counters, per
// member or summed as Options.PerMember says.
type connCollector struct {
	table Table
	conns Conns
	per   string

	accepted, active, refused, dropped, redispatched, handshake, rxBytes, txBytes *prometheus.Desc
}

func newConnCollector(t Table, c Conns, per string) *connCollector {
	member := []string{labelIP, labelPort, labelMember}
	return &connCollector{
		table: t,
		conns: c,
		per:   per,
		accepted: prometheus.NewDesc("vipmux_connections_accepted_total",
			"Client connections accepted and proxied to the member's backend.", member, nil),
		active: prometheus.NewDesc("vipmux_connections_active",
			"Proxied connections to the member that are open now.", member, nil),
		refused: prometheus.NewDesc("vipmux_connections_refused_total",
			"Client connections answered with RST, by reason: no_active_member (member=\"\"), backend_refused, dial_timeout, max_connections.",
			append(member, labelReason), nil),
		dropped: prometheus.NewDesc("vipmux_connections_dropped_total",
			"Client SYNs dropped without an answer (the client retransmits), by reason: source_limit (max_in_flight_per_source).",
			append(member, labelReason), nil),
		redispatched: prometheus.NewDesc("vipmux_connections_redispatched_total",
			"Client connections whose dial to the member's backend failed and that were dialled to the binding's next healthy member instead, before their handshake completed (mode 2 only).", member, nil),
		handshake: prometheus.NewDesc("vipmux_connections_handshake_failed_total",
			"Client connections whose handshake did not complete: the client went away, or did not answer within [dispatch] handshake_timeout.", member, nil),
		rxBytes: prometheus.NewDesc("vipmux_connections_receive_bytes_total",
			"Bytes received from clients and proxied to the member's backend.", member, nil),
		txBytes: prometheus.NewDesc("vipmux_connections_transmit_bytes_total",
			"Bytes received from the member's backend and transmitted to clients.", member, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *connCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.accepted, c.active, c.refused, c.dropped, c.redispatched, c.handshake, c.rxBytes, c.txBytes} {
		ch <- d
	}
}

// seriesKey is the label values of one member's series, or of a sum.
type seriesKey struct{ ip, port, member string }

// connSum is the counters of one seriesKey.
type connSum struct {
	// noRoute and member say which series the key has: refusals without
	// an active member, and the member counters.
	noRoute, member bool
	mode2           bool
	outcomes        [len(dispatch.MemberStats{}.Outcomes)]uint64
	redispatched    uint64
	active          int64
	rx, tx          uint64
}

// key is the series that s's counters go to under c.per.
func (c *connCollector) key(s dispatch.MemberStats) seriesKey {
	switch {
	case c.per == PerMemberNone:
		return seriesKey{}
	case c.per == PerMemberMode2 && s.Binding.Port == 0:
		return seriesKey{port: portLabel(0)}
	}
	return seriesKey{ip: s.Binding.IP.String(), port: portLabel(s.Binding.Port), member: s.Member}
}

// Collect implements prometheus.Collector. Members that are no longer in
// the table (nor draining) are left out, even if dispatch still has their
// counters.
func (c *connCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.table.Table()
	stats := c.conns.Stats()
	if c.per == PerMemberAll {
		// Every stats is a series of its own: no sums to keep.
		var sum connSum
		for _, s := range stats {
			if s.Member != "" && !inTable(t, s) {
				continue
			}
			sum = connSum{}
			sum.add(s)
			c.emit(ch, c.key(s), &sum)
		}
		return
	}
	sums := make(map[seriesKey]*connSum)
	var order []seriesKey // the order of the first stats of each key
	for _, s := range stats {
		if s.Member != "" && !inTable(t, s) {
			continue
		}
		k := c.key(s)
		sum := sums[k]
		if sum == nil {
			sum = &connSum{}
			sums[k] = sum
			order = append(order, k)
		}
		sum.add(s)
	}
	for _, k := range order {
		c.emit(ch, k, sums[k])
	}
}

// add adds s's counters to sum.
func (sum *connSum) add(s dispatch.MemberStats) {
	if s.Member == "" {
		sum.noRoute = true
		sum.outcomes[dispatch.NoRoute] += s.Outcomes[dispatch.NoRoute]
		return
	}
	sum.member = true
	sum.mode2 = sum.mode2 || s.Binding.Port != 0
	for o, n := range s.Outcomes {
		sum.outcomes[o] += n
	}
	sum.redispatched += s.Redispatched
	sum.active += s.Active
	sum.rx += s.BytesToBackend
	sum.tx += s.BytesToClient
}

// emit sends the series of key k with the counters of sum.
func (c *connCollector) emit(ch chan<- prometheus.Metric, k seriesKey, sum *connSum) {
	counter := func(d *prometheus.Desc, v uint64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{k.ip, k.port, k.member}, extra...)...)
	}
	if sum.noRoute {
		counter(c.refused, sum.outcomes[dispatch.NoRoute], ReasonNoActiveMember)
	}
	if !sum.member {
		return
	}
	counter(c.accepted, sum.outcomes[dispatch.Proxied])
	counter(c.refused, sum.outcomes[dispatch.Refused], ReasonBackendRefused)
	counter(c.refused, sum.outcomes[dispatch.DialTimeout], ReasonDialTimeout)
	counter(c.refused, sum.outcomes[dispatch.MaxConnections], ReasonMaxConnections)
	counter(c.dropped, sum.outcomes[dispatch.SourceLimit], ReasonSourceLimit)
	if sum.mode2 {
		// A mode-1 binding has one member: nothing to redispatch to.
		counter(c.redispatched, sum.redispatched)
	}
	counter(c.handshake, sum.outcomes[dispatch.HandshakeFailed])
	counter(c.rxBytes, sum.rx)
	counter(c.txBytes, sum.tx)
	ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(sum.active), k.ip, k.port, k.member)
}

// inTable reports whether s's member is in t, or draining there.
func inTable(t *registry.Table, s dispatch.MemberStats) bool {
	return t.MemberOrDraining(s.Binding, s.Member)
}
