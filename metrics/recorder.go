package metrics

import (
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vipmux/vipmux/registry"
)

// durationBuckets are the upper bounds, in seconds, of the duration
// histograms: from a backend on the same LAN (100 µs) to a dial or probe
// that runs into its timeout (seconds), and an fsync on a slow disk.
var durationBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Recorder takes the figures that the gateway's parts report as they
// happen, rather than at scrape time: the durations of backend dials,
// health probes and state saves, and the lease expiries. It exists before
// the parts that report to it (the registry saves before the metrics are
// built), so the gateway creates it first, hands its methods to the
// parts, and gives it to New in Options.Recorder.
//
// Its methods are safe for concurrent use and cost a few atomic
// operations: they run on the dial path and under the registry's lock.
type Recorder struct {
	dial, probe, save prometheus.Histogram
	expiries          atomic.Uint64
}

// NewRecorder returns a Recorder with empty histograms.
func NewRecorder() *Recorder {
	h := func(name, help string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: durationBuckets})
	}
	return &Recorder{
		dial: h("vipmux_backend_dial_duration_seconds",
			"Time a client connection's dial to its member's backend took, successful or not (one per attempt, redispatched attempts included)."),
		probe: h("vipmux_health_check_duration_seconds",
			"Time a health probe (TCP connect to a mode-2 member's backend) took, successful or not."),
		save: h("vipmux_state_save_duration_seconds",
			"Time a save of the table to the state store took (one per group commit)."),
	}
}

// ObserveDial records a backend dial that took d; give it to
// dispatch.Options.ObserveDial.
func (r *Recorder) ObserveDial(d time.Duration) { r.dial.Observe(d.Seconds()) }

// ObserveProbe records a health probe that took d; give it to
// health.Options.ObserveProbe.
func (r *Recorder) ObserveProbe(d time.Duration) { r.probe.Observe(d.Seconds()) }

// ObserveSave records a save of the table that took d; give it to
// registry.Options.ObserveSave.
func (r *Recorder) ObserveSave(d time.Duration) { r.save.Observe(d.Seconds()) }

// Event counts the registry's automatic changes that have a counter of
// their own: a lease that ran out (a mode-1 member removed, a mode-2
// member marked down). Give it to registry.Options.OnEvent; it runs under
// the registry's lock and only adds to a counter.
func (r *Recorder) Event(e registry.Event) {
	if e.Cause == registry.CauseExpiry && (e.What == "removed" || e.What == "down") {
		r.expiries.Add(1)
	}
}

// recorderCollector exports a Recorder.
type recorderCollector struct {
	r        *Recorder
	expiries *prometheus.Desc
}

func newRecorderCollector(r *Recorder) *recorderCollector {
	return &recorderCollector{r: r, expiries: prometheus.NewDesc("vipmux_lease_expiries_total",
		"Leases that ran out: mode-1 members removed, mode-2 members marked down.", nil, nil)}
}

// Describe implements prometheus.Collector.
func (c *recorderCollector) Describe(ch chan<- *prometheus.Desc) {
	c.r.dial.Describe(ch)
	c.r.probe.Describe(ch)
	c.r.save.Describe(ch)
	ch <- c.expiries
}

// Collect implements prometheus.Collector.
func (c *recorderCollector) Collect(ch chan<- prometheus.Metric) {
	c.r.dial.Collect(ch)
	c.r.probe.Collect(ch)
	c.r.save.Collect(ch)
	ch <- prometheus.MustNewConstMetric(c.expiries, prometheus.CounterValue, float64(c.r.expiries.Load()))
}

// buildInfo is vipmux_build_info: constant 1 with the build's labels.
func buildInfo(version, revision string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vipmux_build_info",
		Help: "Always 1; the labels say which build runs: version, revision (commit) and goversion.",
		ConstLabels: prometheus.Labels{
			"version":   orUnknown(version),
			"revision":  orUnknown(revision),
			"goversion": runtime.Version(),
		},
	})
	g.Set(1)
	return g
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// reloadState is the outcome of the last configuration load or reload.
type reloadState struct {
	ok, at prometheus.Gauge
}

func newReloadState(start time.Time) *reloadState {
	s := &reloadState{
		ok: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vipmux_config_last_reload_successful",
			Help: "1 if the last reload of the configuration (SIGHUP, POST /v1/reload) was applied, 0 if it was refused; 1 before the first.",
		}),
		at: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vipmux_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last configuration applied: the last successful reload, or the start.",
		}),
	}
	s.ok.Set(1)
	s.at.Set(float64(start.UnixNano()) / 1e9)
	return s
}
