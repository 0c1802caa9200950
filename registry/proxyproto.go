package registry

// ProxyProtocol is the version of the PROXY protocol header that the
// gateway writes as the first bytes of each backend connection of a
// member, so that the backend learns the client's address and the front
// address that the client dialled. The zero value sends no header.
type ProxyProtocol string

// PROXY protocol settings of a member.
const (
	// ProxyNone sends no header: the backend sees the gateway's address.
	ProxyNone ProxyProtocol = ""
	// ProxyV1 sends the human-readable header ("PROXY TCP4 ...\r\n").
	ProxyV1 ProxyProtocol = "v1"
	// ProxyV2 sends the binary header.
	ProxyV2 ProxyProtocol = "v2"
)

// proxyNoneName is how the API and the CLI spell ProxyNone.
const proxyNoneName = "none"

// String returns "v1", "v2" or "none".
func (p ProxyProtocol) String() string {
	if p == ProxyNone {
		return proxyNoneName
	}
	return string(p)
}

// ParseProxyProtocol parses a PROXY protocol setting as the API and the
// CLI spell it: "v1", "v2", or "none" or "" for no header. Anything else
// is an ErrInvalid FieldError naming the field "proxy_protocol".
func ParseProxyProtocol(s string) (ProxyProtocol, error) {
	switch s {
	case "", proxyNoneName:
		return ProxyNone, nil
	case string(ProxyV1), string(ProxyV2):
		return ProxyProtocol(s), nil
	}
	return ProxyNone, Invalid("proxy_protocol", "%q: use %q, %q or %q", s, ProxyV1, ProxyV2, proxyNoneName)
}

// valid reports whether p is one of the settings (the stored form, where
// none is "").
func (p ProxyProtocol) valid() bool {
	return p == ProxyNone || p == ProxyV1 || p == ProxyV2
}
