package plugin

import (
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"os"
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

// stateHandler serves GET /state/{flow}/{key...}: through the console
// when one is set (kisflow run knows which engine runs each flow's job
// now, across stops, starts and reloads), else from states, the keyed
// state of this engine's running jobs.
func (c *Console) stateHandler(states *States) http.Handler {
	own := serveState(states)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		p := c.h
		c.mu.Unlock()
		if p == nil {
			own(w, r)
			return
		}
		(*p).ServeHTTP(w, r)
	})
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

// adminToken is the admin server's bearer token, from TokenEnv ("" for
// none). A token that is only whitespace, or starts or ends with some, is
// refused: a client cannot send it (the header's value is trimmed), so
// every request would get a 401.
func adminToken() (string, error) {
	token := os.Getenv(TokenEnv)
	switch {
	case token != "" && strings.TrimSpace(token) == "":
		return "", fmt.Errorf("%s holds only whitespace: no request could send that token, so the admin API would refuse everyone; set a token, or unset %s for none", TokenEnv, TokenEnv)
	case token != strings.TrimSpace(token):
		return "", fmt.Errorf("%s starts or ends with whitespace (a newline from a file?): no request could send that token, so the admin API would refuse everyone; set it without", TokenEnv)
	}
	return token, nil
}

// guardBrowsers wraps the admin server's handler h against web pages of
// other sites, which a browser on the operator's machine would otherwise
// let reach it:
//
//   - a request that may change something (any method but GET, HEAD and
//     OPTIONS) sent by a page of another origin, as its Sec-Fetch-Site or
//     Origin header tells (http.CrossOriginProtection), answers 403: such
//     a page could stop flows or replay dead letters (cross-site request
//     forgery). A request without those headers (curl, scripts) passes.
//   - when the server listens on a loopback address, a request whose Host
//     header is not an IP address, localhost or the listen address's host
//     answers 403: a page of another site whose name was made to resolve
//     to this machine (DNS rebinding) would otherwise be of the same
//     origin as the server and read it. A server listening beyond
//     localhost is reached under names this one cannot know: it wants
//     TokenEnv instead.
func guardBrowsers(listen string, h http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	own, _, _ := net.SplitHostPort(listen)
	checkHost := loopback(listen)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if checkHost && !localName(r.Host, own) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "Host " + r.Host + " refused: the admin server listens on " + listen +
				" (loopback) and answers only requests addressed to an IP address, localhost or " + own +
				", so that a page of another site cannot reach it under its own name (DNS rebinding)"})
			return
		}
		if err := cop.Check(r); err != nil {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": r.Method + " " + r.URL.Path + " refused: it comes from a web page of another origin (" +
				fromHeaders(r) + "), which may not change anything here (cross-site request forgery). Use the inspector served by this server, or a client that sends no Origin header (curl)"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// fromHeaders names the headers that tell where a browser request comes
// from.
func fromHeaders(r *http.Request) string {
	var from []string
	for _, k := range []string{"Origin", "Sec-Fetch-Site"} {
		if v := r.Header.Get(k); v != "" {
			from = append(from, k+": "+v)
		}
	}
	return strings.Join(from, ", ")
}

// localName reports whether the Host header host (with or without a
// port) names this server without a name a DNS record could bind
// elsewhere: an IP address, localhost, or own (the listen address's
// host). A request without one (HTTP/1.0) passes.
func localName(host, own string) bool {
	if host == "" {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i] // an IPv6 zone
	}
	return net.ParseIP(host) != nil || strings.EqualFold(host, "localhost") || (own != "" && strings.EqualFold(host, own))
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
