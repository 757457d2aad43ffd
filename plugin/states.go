package plugin

import (
	"encoding/json"
	"net/http"
	"sync"
)

// StateView returns the committed keyed state a running job holds for key:
// each state's name and its value as JSON (a map state as an object). An
// empty map means key has no state. It must be safe for concurrent use and
// quick: it runs on the admin server's request goroutine.
type StateView func(key string) (map[string]json.RawMessage, error)

// States holds the state views of the running jobs by flow name; the
// admin server serves them on GET /state/{flow}/{key}. It is safe for
// concurrent use.
type States struct {
	mu    sync.Mutex
	views map[string]*StateView
}

// Set makes view the state view of flow until remove is called (a later
// Set for the same flow replaces it; remove then does nothing).
func (s *States) Set(flow string, view StateView) (remove func()) {
	p := &view
	s.mu.Lock()
	if s.views == nil {
		s.views = map[string]*StateView{}
	}
	s.views[flow] = p
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.views[flow] == p {
			delete(s.views, flow)
		}
		s.mu.Unlock()
	}
}

// Get returns the state view of flow, false when no job of it runs.
func (s *States) Get(flow string) (StateView, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.views[flow]
	if !ok {
		return nil, false
	}
	return *p, true
}

// stateReply is the body of GET /state/{flow}/{key}.
type stateReply struct {
	Flow  string                     `json:"flow"`
	Key   string                     `json:"key"`
	State map[string]json.RawMessage `json:"state"`
}

// serveState answers GET /state/{flow}/{key} (the key may hold slashes;
// escape others with %XX) with the state of states.
func serveState(states *States) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method " + r.Method + " not allowed: use GET"})
			return
		}
		flow, key := r.PathValue("flow"), r.PathValue("key")
		view, ok := states.Get(flow)
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no running job of flow " + flow + " holds keyed state"})
			return
		}
		st, err := view(key)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		if len(st) == 0 {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "flow " + flow + " holds no state for key " + key})
			return
		}
		writeJSON(w, http.StatusOK, stateReply{Flow: flow, Key: key, State: st})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encode the reply"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
