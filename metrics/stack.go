package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// stackMetric is one series read from gVisor's stack statistics.
type stackMetric struct {
	desc        *prometheus.Desc
	typ         prometheus.ValueType
	labelValues []string
	value       func(*tcpip.Stats) uint64
}

// Drop reasons, the values of the reason label of
// vipmux_stack_dropped_packets_total, each one of gVisor's counters.
var dropReasons = []struct {
	reason string
	value  func(*tcpip.Stats) uint64
}{
	// IP packets to an address that the stack does not hold.
	{"ip_invalid_destination", func(s *tcpip.Stats) uint64 { return s.IP.InvalidDestinationAddressesReceived.Value() }},
	{"ip_invalid_source", func(s *tcpip.Stats) uint64 { return s.IP.InvalidSourceAddressesReceived.Value() }},
	{"ip_malformed", func(s *tcpip.Stats) uint64 { return s.IP.MalformedPacketsReceived.Value() }},
	{"ip_send_error", func(s *tcpip.Stats) uint64 { return s.IP.OutgoingPacketErrors.Value() }},
	{"arp_malformed", func(s *tcpip.Stats) uint64 { return s.ARP.MalformedPacketsReceived.Value() }},
	{"l4_malformed", func(s *tcpip.Stats) uint64 { return s.NICs.MalformedL4RcvdPackets.Value() }},
	// Packets that the transport layer dropped: no endpoint for them.
	{"transport", func(s *tcpip.Stats) uint64 { return s.DroppedPackets.Value() }},
	{"tcp_checksum", func(s *tcpip.Stats) uint64 { return s.TCP.ChecksumErrors.Value() }},
	{"tcp_invalid_segment", func(s *tcpip.Stats) uint64 { return s.TCP.InvalidSegmentsReceived.Value() }},
	// SYNs dropped because [dispatch] max_in_flight handshakes were being
	// dialled already.
	{"tcp_max_in_flight", func(s *tcpip.Stats) uint64 { return s.TCP.ForwardMaxInFlightDrop.Value() }},
	{"tx_no_buffer_space", func(s *tcpip.Stats) uint64 { return s.NICs.TxPacketsDroppedNoBufferSpace.Value() }},
}

// stackCollector exports a chosen set of gVisor's stack counters: the
// front NIC's packets and bytes each way, drops by reason, ARP, and TCP.
type stackCollector struct {
	stack   Stack
	metrics []stackMetric
	descs   []*prometheus.Desc
	dad     *prometheus.Desc
}

func newStackCollector(st Stack) *stackCollector {
	c := &stackCollector{stack: st}
	if _, ok := st.(dadCounter); ok {
		c.dad = prometheus.NewDesc("vipmux_dad_conflicts_total",
			"Addresses refused because duplicate address detection (ARP probe, IPv6 DAD) found another host holding them on the front link.", nil, nil)
		c.descs = append(c.descs, c.dad)
	}
	add := func(name, help string, typ prometheus.ValueType, value func(*tcpip.Stats) uint64) {
		d := prometheus.NewDesc(name, help, nil, nil)
		c.descs = append(c.descs, d)
		c.metrics = append(c.metrics, stackMetric{desc: d, typ: typ, value: value})
	}
	counter := prometheus.CounterValue
	add("vipmux_stack_receive_packets_total", "Frames that the front NIC received (gVisor NIC Rx.Packets).", counter,
		func(s *tcpip.Stats) uint64 { return s.NICs.Rx.Packets.Value() })
	add("vipmux_stack_transmit_packets_total", "Frames that the front NIC sent (gVisor NIC Tx.Packets).", counter,
		func(s *tcpip.Stats) uint64 { return s.NICs.Tx.Packets.Value() })
	add("vipmux_stack_receive_bytes_total", "Bytes that the front NIC received (gVisor NIC Rx.Bytes).", counter,
		func(s *tcpip.Stats) uint64 { return s.NICs.Rx.Bytes.Value() })
	add("vipmux_stack_transmit_bytes_total", "Bytes that the front NIC sent (gVisor NIC Tx.Bytes).", counter,
		func(s *tcpip.Stats) uint64 { return s.NICs.Tx.Bytes.Value() })
	add("vipmux_stack_arp_receive_requests_total", "ARP requests received on the front NIC, for any address.", counter,
		func(s *tcpip.Stats) uint64 { return s.ARP.RequestsReceived.Value() })
	add("vipmux_stack_arp_transmit_replies_total", "ARP requests answered: replies sent for addresses that the gateway holds.", counter,
		func(s *tcpip.Stats) uint64 { return s.ARP.OutgoingRepliesSent.Value() })
	add("vipmux_stack_arp_transmit_requests_total", "ARP requests the stack sent to resolve neighbours (gratuitous ARP and probes not included).", counter,
		func(s *tcpip.Stats) uint64 { return s.ARP.OutgoingRequestsSent.Value() })
	add("vipmux_stack_tcp_established", "TCP connections of the stack in state ESTABLISHED (client side of proxied connections).", prometheus.GaugeValue,
		func(s *tcpip.Stats) uint64 { return s.TCP.CurrentEstablished.Value() })
	add("vipmux_stack_tcp_receive_segments_total", "Valid TCP segments received.", counter,
		func(s *tcpip.Stats) uint64 { return s.TCP.ValidSegmentsReceived.Value() })
	add("vipmux_stack_tcp_transmit_segments_total", "TCP segments sent.", counter,
		func(s *tcpip.Stats) uint64 { return s.TCP.SegmentsSent.Value() })
	add("vipmux_stack_tcp_transmit_resets_total", "TCP resets sent (refused connections among them).", counter,
		func(s *tcpip.Stats) uint64 { return s.TCP.ResetsSent.Value() })
	add("vipmux_stack_tcp_retransmits_total", "TCP segments retransmitted.", counter,
		func(s *tcpip.Stats) uint64 { return s.TCP.Retransmits.Value() })

	drop := prometheus.NewDesc("vipmux_stack_dropped_packets_total",
		"Packets that the stack dropped, by reason (one gVisor counter each).", []string{labelReason}, nil)
	c.descs = append(c.descs, drop)
	for _, r := range dropReasons {
		c.metrics = append(c.metrics, stackMetric{desc: drop, typ: counter, labelValues: []string{r.reason}, value: r.value})
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *stackCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *stackCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stack.Stats()
	for _, m := range c.metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, float64(m.value(&s)), m.labelValues...)
	}
	if d, ok := c.stack.(dadCounter); ok {
		ch <- prometheus.MustNewConstMetric(c.dad, prometheus.CounterValue, float64(d.DADConflicts()))
	}
}

// dadCounter is the optional capability of a Stack that counts duplicate
// address detection conflicts; *stack.Stack has it.
type dadCounter interface {
	// DADConflicts returns how many addresses were refused because
	// another host on the front link answered for them.
	DADConflicts() uint64
}
