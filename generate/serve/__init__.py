"""The local web app (`dvsa serve`): `app.create_app`; the page is static/index.html + static/app.js;
`bench.bench_serve` is its load test; `toy.build_toy_run` a tiny run folder for tests and benches."""
