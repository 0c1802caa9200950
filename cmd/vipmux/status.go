package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/vipmux/vipmux/control"
)

// minWatchInterval is the shortest --interval of status --watch.
const minWatchInterval = 100 * time.Millisecond

// ANSI sequences that redraw a terminal in place: cursor home, clear to the
// end of the line, clear to the end of the screen, clear the screen.
const (
	ansiHome        = "\x1b[H"
	ansiClearLine   = "\x1b[K"
	ansiClearBelow  = "\x1b[J"
	ansiClearScreen = "\x1b[2J"
)

// watchStatus fetches the status every --interval and prints it until
// SIGINT or SIGTERM, then returns nil. A failed fetch is shown (on stderr
// with --json) and retried at the next refresh.
func watchStatus(c *cli.Context, cl *control.Client, filter statusFilter) error {
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	w := statusWatcher{
		out:      c.App.Writer,
		errOut:   c.App.ErrWriter,
		cl:       cl,
		gateway:  cl.BaseURL,
		interval: c.Duration("interval"),
		timeout:  clientTimeout(c),
		json:     c.Bool("json"),
		tty:      isTerminal(c.App.Writer),
		filter:   filter,
	}
	tick := time.NewTicker(w.interval)
	defer tick.Stop()
	for first := true; ; first = false {
		if err := w.refresh(ctx, first); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			if w.tty && !w.json {
				fmt.Fprintln(w.out) // leave the prompt below the table
			}
			return nil
		case <-tick.C:
		}
	}
}

// statusWatcher is the state of status --watch.
type statusWatcher struct {
	out, errOut       io.Writer
	cl                *control.Client
	gateway           string
	interval, timeout time.Duration
	json              bool
	tty               bool
	filter            statusFilter
}

// refresh fetches the status once and prints it. It returns only errors
// of writing the output.
func (w *statusWatcher) refresh(ctx context.Context, first bool) error {
	rctx, cancel := context.WithTimeout(ctx, w.timeout)
	s, err := w.cl.Status(rctx)
	cancel()
	s = w.filter.apply(s)
	if ctx.Err() != nil {
		return nil // interrupted: print nothing half-done
	}
	now := time.Now()
	if w.json {
		if err != nil {
			fmt.Fprintf(w.errOut, "vipmux: status: %v\n", err)
			return nil
		}
		b, err := json.Marshal(s)
		if err != nil {
			return fmt.Errorf("status: %w", err)
		}
		_, err = w.out.Write(append(b, '\n'))
		return err
	}
	var frame bytes.Buffer
	fmt.Fprintf(&frame, "vipmux status  %s  %s  (every %v; Ctrl-C to stop)\n\n", w.gateway, now.Format("2006-01-02 15:04:05"), w.interval)
	if err != nil {
		fmt.Fprintf(&frame, "status: %v\n(retrying)\n", err)
	} else if err := printStatus(&frame, s, now); err != nil {
		return err
	}
	if !w.tty {
		if !first {
			fmt.Fprintln(w.out)
		}
		_, err := w.out.Write(frame.Bytes())
		return err
	}
	return w.redraw(frame.Bytes(), first)
}

// redraw draws frame over the previous one on a terminal without clearing
// the screen first (no flicker): home, every line cleared to its end, the
// rest of the screen cleared.
func (w *statusWatcher) redraw(frame []byte, first bool) error {
	var b strings.Builder
	if first {
		b.WriteString(ansiClearScreen)
	}
	b.WriteString(ansiHome)
	sc := bufio.NewScanner(bytes.NewReader(frame))
	for sc.Scan() {
		b.WriteString(sc.Text())
		b.WriteString(ansiClearLine + "\n")
	}
	b.WriteString(ansiClearBelow)
	_, err := io.WriteString(w.out, b.String())
	return err
}

// statusFilter is status's --ip, --port, --name and --down; the zero
// value keeps everything.
type statusFilter struct {
	ip   string
	port int
	name string
	down bool
}

// statusFilterOf reads the filter flags (validated as they were parsed).
func statusFilterOf(c *cli.Context) statusFilter {
	f := statusFilter{name: c.String("name"), down: c.Bool("down")}
	if v, ok := c.Generic("ip").(*ipValue); ok && v.a.IsValid() {
		f.ip = v.a.String()
	}
	if v, ok := c.Generic("port").(*portValue); ok {
		f.port = v.p
	}
	return f
}

// apply returns s with only the bindings and members that f keeps: a
// binding matches --ip and --port; a member matches --name, and with
// --down is down, unless its binding serves nobody (then every member of
// it is shown). Bindings left without members go. The summary and the
// events are the whole table's.
func (f statusFilter) apply(s control.Status) control.Status {
	if f == (statusFilter{}) {
		return s
	}
	var out []control.BindingView
	for _, b := range s.Bindings {
		if (f.ip != "" && b.IP != f.ip) || (f.port != 0 && b.Port != f.port) {
			continue
		}
		dark := !serving(b)
		var ms []control.MemberView
		for _, m := range b.Members {
			if (f.name != "" && m.Name != f.name) || (f.down && !m.Down && !dark) {
				continue
			}
			ms = append(ms, m)
		}
		if len(ms) > 0 {
			b.Members = ms
			out = append(out, b)
		}
	}
	s.Bindings = out
	return s
}

// serving reports whether b has an active member that is up.
func serving(b control.BindingView) bool {
	for _, m := range b.Members {
		if m.State == "active" && !m.Down {
			return true
		}
	}
	return false
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
