module github.com/ad5dec64/instancelock/bench

go 1.26.0

replace github.com/ad5dec64/instancelock => ../

require (
	github.com/ad5dec64/instancelock v0.0.0-00010101000000-000000000000
	github.com/ad5dec64/instancelock/pglock v0.0.0-00010101000000-000000000000
	github.com/ad5dec64/instancelock/redislock v0.0.0-00010101000000-000000000000
	github.com/alexliesenfeld/health v0.8.0
	github.com/bsm/redislock v0.9.4
	github.com/go-redsync/redsync/v4 v4.18.1
	github.com/gofrs/flock v0.13.2
	github.com/hellofresh/health-go/v5 v5.5.4
	github.com/jackc/pgx/v5 v5.12.0
	github.com/nightlyone/lockfile v1.0.0
	github.com/redis/go-redis/v9 v9.23.0
	golang.org/x/sys v0.49.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	go.opentelemetry.io/otel v1.35.0 // indirect
	go.opentelemetry.io/otel/trace v1.35.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/text v0.41.0 // indirect
)

replace github.com/ad5dec64/instancelock/pglock => ../pglock

replace github.com/ad5dec64/instancelock/redislock => ../redislock
