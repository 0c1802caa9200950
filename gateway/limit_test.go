package gateway_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/vipmux/vipmux/control"
)

// TestGatewayControlConnectionCap: [control] max_connections caps the
// control API's concurrent connections (issue 12, point 4). With the cap
// of 2 held by two clients that never finish their request, a third is
// not served; once one of them goes, it is.
func TestGatewayControlConnectionCap(t *testing.T) {
	e := newEnv(t, "[control]\nmax_connections = 2\n")
	addr := e.gw.ControlAddr().String()
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial the control API: %v", err)
		}
		defer c.Close()
		// Half a request: the server holds the connection, reading.
		if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\n")); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// The server has taken both (they are read, not queued): an answer to
	// the end of their request proves it.
	if _, err := held[0].Write([]byte("Host: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 12)
	held[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := held[0].Read(buf); err != nil || string(buf) != "HTTP/1.1 200" {
		t.Fatalf("the first held connection's request: %q, %v; want HTTP/1.1 200", buf, err)
	}

	// A third client: its request waits for a free connection.
	third := &control.Client{BaseURL: "http://" + addr, HTTP: &http.Client{Timeout: 300 * time.Millisecond}}
	if err := statusErr(third); err == nil {
		t.Fatalf("a third connection was served while max_connections = 2 were held")
	}
	held[0].Close()
	third.HTTP = &http.Client{Timeout: 10 * time.Second}
	if err := statusErr(third); err != nil {
		t.Errorf("a third connection once one of the two was closed: %v, want it served", err)
	}
}

// statusErr calls GET /v1/status.
func statusErr(c *control.Client) error {
	_, err := c.Status(context.Background())
	return err
}
