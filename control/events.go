package control

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/vipmux/vipmux/registry"
)

// PathEvents streams the table's changes (GET): one ChangeView per line
// (JSON Lines) as each change is made, until the client goes away or the
// gateway stops.
const PathEvents = "/v1/events"

// ChangeView is one change of a member in the table, as GET /v1/events
// streams it.
type ChangeView struct {
	// Time is when the gateway published the change.
	Time time.Time `json:"time"`
	// Binding is "IP:PORT", or "IP:*" for every port.
	Binding string `json:"binding"`
	// Member is the member concerned.
	Member string `json:"member"`
	// What changed: "registered", "removed", "active", "standby", "down",
	// "up" or "updated" (its backend, lease or PROXY protocol).
	What string `json:"what"`
	// State and Down are the member's state afterwards; absent once
	// removed.
	State string `json:"state,omitempty"`
	Down  bool   `json:"down,omitempty"`
	// Why is the member's reason, for people.
	Why string `json:"why,omitempty"`
	// Cause is what made the change, for programs: "register", "switch",
	// "health", "expiry", "renew", "failover", "failback".
	Cause string `json:"cause,omitempty"`
}

// feedBuffer is how many changes a follower may be behind before it is
// cut off (its stream ends; it may reconnect and read the status again).
const feedBuffer = 1024

// feed fans the registry's changes out to the followers of GET
// /v1/events. Its watch runs under the registry's write lock: it never
// blocks, and costs nothing while nobody follows.
type feed struct {
	// mu guards the following field.
	mu   sync.Mutex
	subs map[chan ChangeView]struct{}
}

// watch is the registry watcher: it sends the changes from prev to next to
// every follower, and cuts off (closes) a follower whose buffer is full.
func (f *feed) watch(prev, next *registry.Table) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.subs) == 0 {
		return
	}
	changes := tableChanges(prev, next, time.Now())
	for ch := range f.subs {
		for _, c := range changes {
			select {
			case ch <- c:
			default:
				close(ch)
				delete(f.subs, ch)
			}
			if _, ok := f.subs[ch]; !ok {
				break
			}
		}
	}
}

func (f *feed) subscribe() chan ChangeView {
	ch := make(chan ChangeView, feedBuffer)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs == nil {
		f.subs = map[chan ChangeView]struct{}{}
	}
	f.subs[ch] = struct{}{}
	return ch
}

func (f *feed) unsubscribe(ch chan ChangeView) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.subs, ch)
}

// tableChanges lists the member changes from prev to next, in the order
// of the bindings (IP, port) and of their members.
func tableChanges(prev, next *registry.Table, now time.Time) []ChangeView {
	var out []ChangeView
	// Both cost the size of the change, not of the table.
	changed := append(registry.Changed(prev, next), registry.Removed(prev, next)...)
	slices.SortFunc(changed, func(a, b *registry.Binding) int {
		if c := a.IP.Compare(b.IP); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	for _, b := range changed {
		pb, _ := prev.Binding(b.Key)
		nb, _ := next.Binding(b.Key)
		key := b.Key.String()
		if nb != nil {
			for _, m := range nb.Members {
				c := ChangeView{Time: now, Binding: key, Member: m.Name, State: string(m.State), Down: m.Down, Why: m.Reason, Cause: string(m.Cause)}
				var old registry.Member
				var had bool
				if pb != nil {
					old, had = pb.Member(m.Name)
				}
				switch {
				case !had:
					c.What = "registered"
				case old.State != m.State:
					c.What = string(m.State)
				case old.Down != m.Down && m.Down:
					c.What = "down"
				case old.Down != m.Down:
					c.What = "up"
				case old.Backend != m.Backend || old.TTL != m.TTL || old.ProxyProtocol != m.ProxyProtocol:
					c.What = "updated"
				default:
					continue // a renewal, or nothing of this member
				}
				out = append(out, c)
			}
		}
		if pb != nil {
			for _, m := range pb.Members {
				if nb != nil {
					if _, ok := nb.Member(m.Name); ok {
						continue
					}
				}
				out = append(out, ChangeView{Time: now, Binding: key, Member: m.Name, What: "removed"})
			}
		}
	}
	return out
}

// serveDoneKey is the request context key under which Serve stores a
// channel closed when it starts shutting down: streaming answers end then,
// instead of holding up the shutdown.
type serveDoneKey struct{}

// serveBase returns the base context of Serve's requests: it carries done.
func serveBase(done <-chan struct{}) func(net.Listener) context.Context {
	ctx := context.WithValue(context.Background(), serveDoneKey{}, done)
	return func(net.Listener) context.Context { return ctx }
}

// events serves GET /v1/events: the table's changes as they happen, one
// JSON object per line, until the client goes away, the follower falls
// more than feedBuffer changes behind, or the server shuts down.
func (s *server) events(w http.ResponseWriter, r *http.Request) error {
	ch := s.feed.subscribe()
	defer s.feed.unsubscribe(ch)
	rc := http.NewResponseController(w)
	// The stream outlives the server's read and write timeouts, which
	// are for ordinary requests.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "application/jsonl")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return nil
	}
	var done <-chan struct{}
	if d, ok := r.Context().Value(serveDoneKey{}).(<-chan struct{}); ok {
		done = d
	}
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-done:
			return nil
		case c, ok := <-ch:
			if !ok {
				s.log.Warn("events follower cut off: it fell behind", "remote", r.RemoteAddr, "behind", feedBuffer)
				return nil
			}
			if err := enc.Encode(c); err != nil {
				return nil
			}
			// Send what is queued as one write.
			for more := true; more; {
				select {
				case c, ok := <-ch:
					if !ok {
						return nil
					}
					if err := enc.Encode(c); err != nil {
						return nil
					}
				default:
					more = false
				}
			}
			if err := rc.Flush(); err != nil {
				return nil
			}
		}
	}
}
