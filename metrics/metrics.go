// Package metrics exposes the gateway's figures in the Prometheus text
// format (github.com/prometheus/client_golang): per binding and member the
// connections that dispatch accepted, refused and carries and their bytes;
// per port the switches, failovers and failbacks; the gVisor stack's own
// packet, ARP and TCP counters; durations of backend dials, health probes
// and state saves; lease expiries, DAD conflicts, the build and the last
// reload; and the Go runtime and process figures. docs/metrics.md lists
// every series.
//
// It keeps almost no state of its own: its collectors read the counters
// that dispatch, the registry and the stack already keep, at scrape time,
// so that the data path pays nothing for a scrape and nothing extra per
// packet. What it counts itself: changes of a port's active member, from
// the registry's change notifications (Watch), which it also logs; and
// what the parts report to its Recorder as it happens. Series of members
// that leave the table go with them; Options.PerMember bounds how many
// there are.
//
//	rec := metrics.NewRecorder() // its methods go to registry, dispatch, health
//	m, err := metrics.New(metrics.Options{Table: reg, Conns: fwd, Stack: st, Recorder: rec, Logger: log})
//	reg.Watch(m.Watch)
//	http.Handle("/metrics", m.Handler())
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vipmux/vipmux/dispatch"
	"github.com/vipmux/vipmux/registry"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// Table returns the registry's current table; *registry.Registry
// implements it.
type Table interface {
	Table() *registry.Table
}

// Conns returns dispatch's per-member connection counters;
// *dispatch.Forwarder implements it. Stats must be safe for concurrent use
// and must not block for long: it runs on every scrape.
type Conns interface {
	Stats() []dispatch.MemberStats
}

// SaveFailures counts the failed saves of the table; *registry.Registry
// implements it. When Options.Table implements it too, the metrics include
// vipmux_state_save_failures_total.
type SaveFailures interface {
	SaveFailures() uint64
}

// Stack returns the gVisor stack's counters; *stack.Stack implements it.
type Stack interface {
	Stats() tcpip.Stats
}

// Options configures New.
type Options struct {
	// Table is the registry's table: which bindings and members exist.
	// Required.
	Table Table
	// Conns are dispatch's connection counters; nil leaves the connection
	// metrics out.
	Conns Conns
	// Stack is the gVisor stack; nil leaves the stack metrics out.
	Stack Stack
	// Recorder takes the durations and events that the parts report as
	// they happen; nil leaves those series out.
	Recorder *Recorder
	// PerMember says which members get series of their own (PerMemberAll,
	// PerMemberMode2, PerMemberNone; [metrics] per_member); empty means
	// PerMemberAll.
	PerMember string
	// Version and Revision are vipmux_build_info's labels; empty ones
	// read "unknown".
	Version, Revision string
	// Notifications, when not nil, returns the [notify] deliveries that
	// succeeded and failed and the events dropped from a full queue
	// (notify.Notifier.Stats), read at scrape time.
	Notifications func() (sent, failed, dropped uint64)
	// Logger receives one Info line per change of a port's active member
	// (switch, automatic failover, failback) and scrape errors. Required.
	Logger *slog.Logger
}

// Values of Options.PerMember ([metrics] per_member).
const (
	// PerMemberAll: every member has its own connection series; mode-2
	// members also vipmux_member_active and vipmux_member_up.
	PerMemberAll = "all"
	// PerMemberMode2: mode-2 members have their own series; mode 1's
	// connection figures are summed into one series per metric, with
	// ip="", port="*", member="". The series count no longer grows with
	// the number of mode-1 IPs.
	PerMemberMode2 = "mode2"
	// PerMemberNone: every member's connection figures are summed into
	// one series per metric (ip="", port="", member=""), and there is no
	// vipmux_member_active or vipmux_member_up.
	PerMemberNone = "none"
)

// PerMemberValues are the values that Options.PerMember accepts.
var PerMemberValues = []string{PerMemberAll, PerMemberMode2, PerMemberNone}

// Metrics is the gateway's Prometheus registry: a private one, not the
// process-global default, holding vipmux's collectors and the standard Go
// and process collectors.
type Metrics struct {
	reg     *prometheus.Registry
	table   *tableCollector
	reload  *reloadState
	log     *slog.Logger
	handler http.Handler
}

// New returns the gateway's metrics.
func New(opts Options) (*Metrics, error) {
	if opts.Table == nil {
		return nil, errors.New("metrics: Options.Table is required")
	}
	if opts.Logger == nil {
		return nil, errors.New("metrics: Options.Logger is required")
	}
	per := opts.PerMember
	switch per {
	case "":
		per = PerMemberAll
	case PerMemberAll, PerMemberMode2, PerMemberNone:
	default:
		return nil, fmt.Errorf("metrics: Options.PerMember %q: use %q, %q or %q", per, PerMemberAll, PerMemberMode2, PerMemberNone)
	}
	m := &Metrics{
		reg:    prometheus.NewRegistry(),
		table:  newTableCollector(opts.Table, per),
		reload: newReloadState(time.Now()),
		log:    opts.Logger,
	}
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.table,
		buildInfo(opts.Version, opts.Revision),
		m.reload.ok, m.reload.at,
	}
	if opts.Conns != nil {
		cs = append(cs, newConnCollector(opts.Table, opts.Conns, per))
	}
	if opts.Stack != nil {
		cs = append(cs, newStackCollector(opts.Stack))
	}
	if opts.Recorder != nil {
		cs = append(cs, newRecorderCollector(opts.Recorder))
	}
	if n := opts.Notifications; n != nil {
		cs = append(cs,
			notifyCounter("vipmux_notifications_sent_total", "[notify] deliveries (a command run, a webhook POSTed) that succeeded.", func() uint64 { s, _, _ := n(); return s }),
			notifyCounter("vipmux_notifications_failed_total", "[notify] deliveries that failed: a command that exited non-zero or ran past [notify] timeout, a webhook that answered other than 2xx or not in time.", func() uint64 { _, f, _ := n(); return f }),
			notifyCounter("vipmux_notifications_dropped_total", "[notify] events dropped because 256 were waiting already.", func() uint64 { _, _, d := n(); return d }))
	}
	if sf, ok := opts.Table.(SaveFailures); ok {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "vipmux_state_save_failures_total",
			Help: "Saves of the table to the state file that failed (full disk, I/O error, read-only file system); automatic changes stand in memory and are saved again.",
		}, func() float64 { return float64(sf.SaveFailures()) }))
	}
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register %T: %w", c, err)
		}
	}
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      errorLog{opts.Logger},
		ErrorHandling: promhttp.ContinueOnError,
	})
	return m, nil
}

// Handler returns the HTTP handler that serves the metrics in the
// Prometheus text format (or OpenMetrics/protobuf when the scraper asks).
func (m *Metrics) Handler() http.Handler { return m.handler }

// Gatherer returns the private registry, for tests and for tools that
// push.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Watch counts and logs the changes of a port's active member between
// prev and next, and forgets the counts of bindings that next no longer
// has. Give it to registry.Watch; it runs with the registry's write lock
// held and takes only its own lock.
func (m *Metrics) Watch(prev, next *registry.Table) {
	for _, c := range m.table.observe(prev, next) {
		// An operator's switch is information; a failover means a
		// member failed and is a warning.
		level := slog.LevelInfo
		if c.Cause == CauseFailover {
			level = slog.LevelWarn
		}
		m.log.Log(context.Background(), level, "active member changed", "binding", c.Key.String(), "from", c.From, "to", c.To, "cause", c.Cause, "why", c.Why)
	}
}

// Reloaded records the outcome of a reload that ended at: err is nil if
// the configuration was applied.
func (m *Metrics) Reloaded(err error, at time.Time) {
	if err != nil {
		m.reload.ok.Set(0)
		return
	}
	m.reload.ok.Set(1)
	m.reload.at.Set(float64(at.UnixNano()) / 1e9)
}

// errorLog passes promhttp's errors to slog.
type errorLog struct{ log *slog.Logger }

// Println implements promhttp.Logger.
func (l errorLog) Println(v ...any) { l.log.Error("metrics scrape", "err", fmt.Sprint(v...)) }

// Label names.
const (
	labelIP     = "ip"
	labelPort   = "port"
	labelMember = "member"
	labelReason = "reason"
)

// portLabel is a binding's port as a label value: "*" for every port
// (mode 1), as status prints it.
func portLabel(p uint16) string {
	if p == 0 {
		return "*"
	}
	return strconv.Itoa(int(p))
}

// notifyCounter is a counter read from the notifier at scrape time.
func notifyCounter(name, help string, v func() uint64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v()) })
}
