package plugin

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// localName takes IP addresses, localhost and the listen address's host,
// with or without a port, and no other name.
func TestLocalName(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:20004": true, "127.0.0.1": true, "[::1]:80": true, "::1": true, "10.1.2.3:80": true,
		"localhost:20004": true, "LOCALHOST": true, "localhost.:1": true, "box.lan:20004": true, "": true,
		"attacker.example:20004": false, "localhost.attacker.example": false, "127.0.0.1.nip.io:80": false,
	} {
		if got := localName(host, "box.lan"); got != want {
			t.Errorf("localName(%q): %v, want %v", host, got, want)
		}
	}
}

// guardBrowsers refuses state-changing requests of other origins, and on
// a loopback listener any request under a name that is not local; a
// request without Origin (curl) passes, and so does a GET from another
// origin (the browser keeps its answer from the page).
func TestGuardBrowsers(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	for _, c := range []struct {
		listen, method, host string
		headers              map[string]string
		want                 int
	}{
		{"127.0.0.1:9", "POST", "127.0.0.1:9", nil, 200},
		{"127.0.0.1:9", "POST", "127.0.0.1:9", map[string]string{"Origin": "http://127.0.0.1:9", "Sec-Fetch-Site": "same-origin"}, 200},
		{"127.0.0.1:9", "POST", "127.0.0.1:9", map[string]string{"Origin": "https://evil.example"}, 403},
		{"127.0.0.1:9", "POST", "127.0.0.1:9", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"127.0.0.1:9", "GET", "127.0.0.1:9", map[string]string{"Origin": "https://evil.example"}, 200},
		{"127.0.0.1:9", "GET", "attacker.example:9", nil, 403},
		{"127.0.0.1:9", "POST", "attacker.example:9", map[string]string{"Origin": "http://attacker.example:9"}, 403},
		{"0.0.0.0:9", "GET", "box.example:9", nil, 200},
		{"0.0.0.0:9", "POST", "box.example:9", map[string]string{"Origin": "https://evil.example"}, 403},
	} {
		req := httptest.NewRequest(c.method, "http://"+c.host+"/api/flows/F/stop", nil)
		for k, v := range c.headers {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		guardBrowsers(c.listen, ok).ServeHTTP(rec, req)
		if rec.Code != c.want {
			t.Errorf("listen %s, %s with Host %s and %v: %d, want %d (%s)", c.listen, c.method, c.host, c.headers, rec.Code, c.want, rec.Body)
		}
	}
}
