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

// Directions, the values of the direction label of
// vipmux_connection_bytes_total.
const (
	ClientToBackend = "client_to_backend"
	BackendToClient = "backend_to_client"
)

// connCollector exports dispatch's per-member connection counters.
type connCollector struct {
	table Table
	conns Conns

	accepted, active, refused, dropped, redispatched, handshake, bytes *prometheus.Desc
}

func newConnCollector(t Table, c Conns) *connCollector {
	member := []string{labelIP, labelPort, labelMember}
	return &connCollector{
		table: t,
		conns: c,
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
		bytes: prometheus.NewDesc("vipmux_connection_bytes_total",
			"Bytes proxied, by direction: client_to_backend, backend_to_client.",
			append(member, labelDirection), nil),
	}
}

// Describe implements prometheus.Collector.
func (c *connCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.accepted, c.active, c.refused, c.dropped, c.redispatched, c.handshake, c.bytes} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. Members that are no longer in
// the table (nor draining) are left out, even if dispatch still has their
// counters.
func (c *connCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.table.Table()
	for _, s := range c.conns.Stats() {
		ip, port := s.Binding.IP.String(), portLabel(s.Binding.Port)
		if s.Member == "" {
			ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(s.Outcomes[dispatch.NoRoute]), ip, port, "", ReasonNoActiveMember)
			continue
		}
		if !inTable(t, s) {
			continue
		}
		counter := func(d *prometheus.Desc, v uint64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{ip, port, s.Member}, extra...)...)
		}
		counter(c.accepted, s.Outcomes[dispatch.Proxied])
		counter(c.refused, s.Outcomes[dispatch.Refused], ReasonBackendRefused)
		counter(c.refused, s.Outcomes[dispatch.DialTimeout], ReasonDialTimeout)
		counter(c.refused, s.Outcomes[dispatch.MaxConnections], ReasonMaxConnections)
		counter(c.dropped, s.Outcomes[dispatch.SourceLimit], ReasonSourceLimit)
		if s.Binding.Port != 0 {
			// A mode-1 binding has one member: nothing to redispatch to.
			counter(c.redispatched, s.Redispatched)
		}
		counter(c.handshake, s.Outcomes[dispatch.HandshakeFailed])
		counter(c.bytes, s.BytesToBackend, ClientToBackend)
		counter(c.bytes, s.BytesToClient, BackendToClient)
		ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(s.Active), ip, port, s.Member)
	}
}

// inTable reports whether s's member is in t, or draining there.
func inTable(t *registry.Table, s dispatch.MemberStats) bool {
	return t.MemberOrDraining(s.Binding, s.Member)
}
