package config

import "testing"

func TestRedactURLsHidesPasswords(t *testing.T) {
	for in, want := range map[string]string{
		"nats://alice:s3cret@10.0.0.1:4222,nats://bob:pw@10.0.0.2:4222": "nats://alice:xxxxx@10.0.0.1:4222,nats://bob:xxxxx@10.0.0.2:4222",
		"tcp://127.0.0.1:1883":      "tcp://127.0.0.1:1883",
		"nats://t0ken@10.0.0.1":     "nats://xxxxx@10.0.0.1",
		"amqp://guest:guest@host/v": "amqp://guest:xxxxx@host/v",
		"not a url":                 "not a url",
	} {
		if got := RedactURLs(in); got != want {
			t.Errorf("RedactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}
