package redis

import (
	"time"

	"github.com/kisflow-go/kisflow/driver"
)

type params struct {
	Mode             string        `param:"mode" default:"hash" enum:"hash|string|list|stream" doc:"how Save and the sink store a row: a hash, a JSON string, a list entry or a stream entry; the source reads a stream"`
	TTL              time.Duration `param:"ttl" default:"0" min:"0" doc:"expiry of saved keys; 0: none"`
	User             string        `param:"user" alias:"username" doc:"ACL user (else a URL's)"`
	Password         string        `param:"password" secret:"true" doc:"password (else a URL's)"`
	DB               int           `param:"db" default:"0" min:"0" doc:"database number (0 only for a cluster; else a URL's)"`
	TLS              bool          `param:"tls" default:"false" doc:"connect with TLS"`
	Cluster          bool          `param:"cluster" default:"false" doc:"a cluster client even for one address"`
	MasterName       string        `param:"master_name" doc:"addrs are the sentinels of this master"`
	SentinelUser     string        `param:"sentinel_user" alias:"sentinel_username" doc:"the sentinels' ACL user"`
	SentinelPassword string        `param:"sentinel_password" secret:"true" doc:"the sentinels' password"`
	ClientName       string        `param:"client_name" doc:"CLIENT SETNAME of the connections"`
	Timeout          time.Duration `param:"timeout" default:"5s" min:"1ms" doc:"every network call"`
	Group            string        `param:"group" doc:"the source's consumer group; default: the flow name"`
	Consumer         string        `param:"consumer" doc:"the source's consumer name; default: host-pid-random (a fixed name lets a restarted process take its pending entries back at once)"`
	ClaimIdle        time.Duration `param:"claim_idle" default:"30s" min:"1ms" doc:"how long a dead consumer's entries stay pending before the source claims them"`
	Block            time.Duration `param:"block" default:"1s" min:"1ms" doc:"how long a source read waits for new entries"`
	Field            string        `param:"field" default:"data" doc:"the stream entry field holding the JSON row"`
	DedupKey         string        `param:"dedup_key" doc:"list and stream saves: a template naming the row's identity; a row whose identity was saved within dedup_ttl is not saved again" example:"{order_id}"`
	DedupTTL         time.Duration `param:"dedup_ttl" default:"24h" min:"1s" doc:"how long dedup_key identities and an exactly-once sink's consumed message IDs are kept"`
	StatePrefix      string        `param:"state_prefix" default:"kisflow:" doc:"the prefix of an exactly-once sink's keys: position (PREFIXpos:KEY), consumed IDs (PREFIXinbox:KEY), keyed state and open windows (PREFIXstate:KEY, a hash)"`
	Client           string        `param:"client" doc:"the name of a shared client configured as plugins.redis.NAME in the global file"`
	OnMissing        string        `param:"on_missing" default:"pass" enum:"pass|drop|dead_letter" doc:"what a YAML Load does with a row whose key has no record"`
	CacheTTL         time.Duration `param:"cache_ttl" default:"0" min:"0" doc:"how long a YAML Load keeps what it looked up (hits and misses); 0: no cache"`
	CacheSize        int           `param:"cache_size" default:"100000" min:"1" doc:"the most keys a YAML Load's cache holds"`
}

// Spec declares the redis connector's params.
var Spec = func() *driver.Spec {
	s := driver.MustSpec[params](Type, "Redis (go-redis v9): hashes, strings, lists and streams for Save, Load and the sink; a stream in a consumer group as a source; an exactly-once sink")
	s.Addrs = "host:port or a redis:// URL (default 127.0.0.1:6379); several make a cluster client, or sentinels with master_name"
	s.Key = "the key template over the row's fields (user:{user_id}); the source's stream key"
	return s
}()
