package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vipmux/vipmux/e2e/pattern"
)

// streamsResult is the last line of `tcpclient streams`.
type streamsResult struct {
	// Conns are the connections asked for, Connected those established.
	Conns     int `json:"conns"`
	Connected int `json:"connected"`
	// Results has one entry per connection, in order: what it sent (bytes
	// and sha256 of pattern seed+i), the server's reply, any error.
	Results []transfer `json:"results"`
	Seconds float64    `json:"seconds"`
}

// streams opens n connections to addr at once and sends on each (4 KiB
// every interval, pattern seed+i) until stdin closes; a "mark" line on
// stdin prints the bytes sent so far on all of them. Then each connection
// half-closes and reads the server's reply. One JSON line when all are
// connected ({"event":"connected",...}), one per mark, one at the end
// (streamsResult).
func streams(addr string, n int, seed uint64, interval, timeout time.Duration) {
	start := time.Now()
	deadline := start.Add(timeout)
	out := streamsResult{Conns: n, Results: make([]transfer, n)}
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := (&net.Dialer{Deadline: deadline}).Dial("tcp", addr)
			if err != nil {
				out.Results[i].Err = "dial: " + err.Error()
				return
			}
			c.SetDeadline(deadline)
			conns[i] = c
		})
	}
	wg.Wait()
	var errs []string
	for i, c := range conns {
		if c != nil {
			out.Connected++
		} else if len(errs) < 5 {
			errs = append(errs, fmt.Sprintf("conn %d: %s", i, out.Results[i].Err))
		}
	}
	printJSON(map[string]any{"event": "connected", "connected": out.Connected, "errors": errs})

	stop := make(chan struct{})
	var sent atomic.Int64
	go func() {
		defer close(stop)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "mark" {
				printJSON(map[string]any{"event": "mark", "sent": sent.Load()})
			}
		}
	}()
	for i, c := range conns {
		if c == nil {
			continue
		}
		wg.Go(func() {
			defer c.Close()
			r := &out.Results[i]
			h := sha256.New()
			src := pattern.NewReader(seed+uint64(i), 1<<62)
			buf := make([]byte, 4<<10)
			t := time.NewTicker(interval)
			defer t.Stop()
		loop:
			for {
				select {
				case <-stop:
					break loop
				case <-t.C:
				}
				io.ReadFull(src, buf)
				if _, err := c.Write(buf); err != nil {
					r.Err = "write: " + err.Error()
					break loop
				}
				h.Write(buf)
				r.Bytes += int64(len(buf))
				sent.Add(int64(len(buf)))
			}
			r.SHA256 = hex.EncodeToString(h.Sum(nil))
			if r.Err != "" {
				return
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				r.Err = "shutdown write: " + err.Error()
				return
			}
			b, err := io.ReadAll(io.LimitReader(c, 4096))
			r.Reply = strings.TrimSpace(string(b))
			if err != nil && !errors.Is(err, io.EOF) {
				r.Err = "read reply: " + err.Error()
			}
		})
	}
	wg.Wait()
	out.Seconds = time.Since(start).Seconds()
	printJSON(out)
}
