package plugin

import (
	"crypto/subtle"
	"net"
	"net/http"
	"strings"
	"sync"
)

// TokenEnv names the environment variable that holds the admin server's
// bearer token. When it is set, /api/ and /state/ answer 401 to a request
// without the header "Authorization: Bearer TOKEN"; /metrics, /healthz,
// /readyz and the inspector's static files stay open (they hold no data
// the token protects).
const TokenEnv = "KISFLOW_ADMIN_TOKEN"

// Console holds the operator's console that kisflow run mounts on the
// admin server: the JSON API under /api/ and the web inspector at /. It
// is safe for concurrent use; without a handler set, those paths answer
// 404 (an engine used as a library has no console).
type Console struct {
	mu sync.Mutex
	h  *http.Handler
}

// Set makes h the console until remove is called (a later Set replaces
// it; remove then does nothing).
func (c *Console) Set(h http.Handler) (remove func()) {
	p := &h
	c.mu.Lock()
	c.h = p
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		if c.h == p {
			c.h = nil
		}
		c.mu.Unlock()
	}
}

// ServeHTTP serves the console's handler, or a 404 when none is set.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	p := c.h
	c.mu.Unlock()
	if p == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no console here: the admin API and the inspector are served by kisflow run"})
		return
	}
	(*p).ServeHTTP(w, r)
}

// requireToken wraps h so that, when token is not empty, a request
// without "Authorization: Bearer token" gets a 401 (the token compared in
// constant time; the scheme in any case, as RFC 7235 says).
func requireToken(token string, h http.Handler) http.Handler {
	if token == "" {
		return h
	}
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, got, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimLeft(got, " ")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kisflow"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token: send the header Authorization: Bearer $" + TokenEnv})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// loopback reports whether the listen address binds only the loopback
// interface.
func loopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
