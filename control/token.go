package control

import (
	"fmt"
	"os"
	"strings"
	"unicode"
)

// ReadTokenFile reads the API token from path: the file's content with
// surrounding whitespace trimmed. An empty file, or a token with whitespace
// or control characters inside, is an error. Both the gateway (serve) and
// the CLI read the token this way.
func ReadTokenFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	if i := strings.IndexFunc(tok, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }); i >= 0 {
		return "", fmt.Errorf("token file %s: token has whitespace or a control character at byte %d; put the token alone on one line", path, i)
	}
	return tok, nil
}
