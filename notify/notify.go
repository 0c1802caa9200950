// Package notify tells the outside world about the changes that matter to
// an operator, as keepalived's notify scripts do: a failover, a switch, a
// failback, a lease that ran out, a health check that failed or recovered,
// a duplicate address, a reload. Each event goes to a command ([notify]
// exec: the event as JSON on stdin and as VIPMUX_* environment variables)
// and to a webhook ([notify] webhook: the JSON POSTed), each bounded by
// [notify] timeout.
//
// Delivery runs on the Notifier's own goroutine, off the data path and off
// the registry's lock: Send never blocks. A full queue drops the event, and
// a command or webhook that fails, times out or answers other than 2xx is
// logged and counted; neither is retried (a notification that arrives late
// tells the wrong story). Events derives the table's events from two
// consecutive tables; the gateway adds its own (reload, DAD conflict).
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind names what happened.
type Kind string

// The events.
const (
	// Failover: the health checker (or a failed dial) moved a port to a
	// standby.
	Failover Kind = "failover"
	// Failback: the preferred member took its port back.
	Failback Kind = "failback"
	// Switch: an operator made a member the active one.
	Switch Kind = "switch"
	// LeaseExpired: a member's lease ran out (mode 2: it is down; mode 1:
	// its address is released).
	LeaseExpired Kind = "lease_expired"
	// HealthDown: a member's health check failed.
	HealthDown Kind = "health_down"
	// HealthUp: a member that its health check had marked down is up.
	HealthUp Kind = "health_up"
	// DADConflict: another host answered for an address being registered;
	// the registration was refused.
	DADConflict Kind = "dad_conflict"
	// Reload: the config file was reloaded.
	Reload Kind = "reload"
	// ReloadRefused: a reload was refused; the config in force stays.
	ReloadRefused Kind = "reload_refused"
)

// Event is one notification. Fields that do not apply are empty.
type Event struct {
	// Time is when the gateway saw it.
	Time time.Time `json:"time"`
	// Kind is what happened.
	Kind Kind `json:"event"`
	// Binding is "ip:port" ("ip:*" for mode 1).
	Binding string `json:"binding,omitempty"`
	// Member is the member concerned (for a change of active: the new one).
	Member string `json:"member,omitempty"`
	// From is the previous active member (failover, failback, switch).
	From string `json:"from,omitempty"`
	// Why says why, for people.
	Why string `json:"why,omitempty"`
}

// env is the event as environment variables for the command.
func (e Event) env() []string {
	return []string{
		"VIPMUX_EVENT=" + string(e.Kind),
		"VIPMUX_TIME=" + e.Time.UTC().Format(time.RFC3339Nano),
		"VIPMUX_BINDING=" + e.Binding,
		"VIPMUX_MEMBER=" + e.Member,
		"VIPMUX_FROM=" + e.From,
		"VIPMUX_WHY=" + e.Why,
	}
}

// Settings say where events go. The zero value sends them nowhere.
type Settings struct {
	// Exec is the command run for each event ([notify] exec): an absolute
	// path, run without a shell, with the event as JSON on stdin and in
	// VIPMUX_* variables.
	Exec string
	// Webhook is the URL each event is POSTed to as JSON ([notify]
	// webhook).
	Webhook string
	// Timeout bounds each command and each POST ([notify] timeout).
	Timeout time.Duration
}

// queueSize is how many events may wait for delivery; more are dropped
// (and counted): a burst of changes must not grow memory or delay later
// events without bound.
const queueSize = 256

// Notifier delivers events. Create it with New, start Run, then Send.
type Notifier struct {
	log      *slog.Logger
	client   *http.Client
	settings atomic.Pointer[Settings]
	queue    chan Event

	sent, failed, dropped atomic.Uint64
	// wg counts deliveries in flight, for tests (Flush).
	wg sync.WaitGroup
}

// New returns a Notifier with settings s. log is required.
func New(s Settings, log *slog.Logger) *Notifier {
	n := &Notifier{
		log:    log,
		client: &http.Client{},
		queue:  make(chan Event, queueSize),
	}
	n.Set(s)
	return n
}

// Set replaces the settings (a reload); events already queued go where the
// new settings say.
func (n *Notifier) Set(s Settings) {
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	n.settings.Store(&s)
}

// DefaultTimeout bounds a command or a POST when Settings.Timeout is 0.
const DefaultTimeout = 5 * time.Second

// Send queues e for delivery and returns at once; with nowhere to send,
// it does nothing. A full queue drops e (counted in Dropped).
func (n *Notifier) Send(e Event) {
	s := n.settings.Load()
	if s.Exec == "" && s.Webhook == "" {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	n.wg.Add(1)
	select {
	case n.queue <- e:
	default:
		n.wg.Done()
		n.dropped.Add(1)
		n.log.Warn("notification dropped: too many waiting", "event", e.Kind, "binding", e.Binding, "member", e.Member)
	}
}

// Run delivers queued events, one at a time in order, until ctx is done.
func (n *Notifier) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-n.queue:
			n.deliver(ctx, e)
			n.wg.Done()
		}
	}
}

// Flush waits until every event sent so far is delivered or has failed
// (Run must be running).
func (n *Notifier) Flush() { n.wg.Wait() }

// Stats returns the deliveries that succeeded and failed (each command and
// each POST counts once) and the events dropped from a full queue.
func (n *Notifier) Stats() (sent, failed, dropped uint64) {
	return n.sent.Load(), n.failed.Load(), n.dropped.Load()
}

func (n *Notifier) deliver(ctx context.Context, e Event) {
	s := n.settings.Load()
	body, err := json.Marshal(e)
	if err != nil { // cannot happen: Event has only strings and a time
		n.fail("json", e, err)
		return
	}
	if s.Exec != "" {
		if err := n.run(ctx, s, e, body); err != nil {
			n.fail("exec", e, err)
		} else {
			n.sent.Add(1)
		}
	}
	if s.Webhook != "" {
		if err := n.post(ctx, s, body); err != nil {
			n.fail("webhook", e, err)
		} else {
			n.sent.Add(1)
		}
	}
}

func (n *Notifier) fail(how string, e Event, err error) {
	n.failed.Add(1)
	n.log.Warn("notification failed", "via", how, "event", e.Kind, "binding", e.Binding, "member", e.Member, "err", err)
}

// run runs the command with the event on stdin and in its environment,
// killing it at the timeout.
func (n *Notifier) run(ctx context.Context, s *Settings, e Event, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Exec)
	cmd.Stdin = bytes.NewReader(append(body, '\n'))
	cmd.Env = append(os.Environ(), e.env()...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second // a child that keeps the output open
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: killed after %v", s.Exec, s.Timeout)
		}
		return fmt.Errorf("%s: %w: %s", s.Exec, err, strings.TrimSpace(lastLine(out.String())))
	}
	return nil
}

// post POSTs body to the webhook; any status but 2xx is a failure.
func (n *Notifier) post(ctx context.Context, s *Settings, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.Webhook, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "vipmux-notify")
	res, err := n.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s", s.Webhook, res.Status)
	}
	return nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
