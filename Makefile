# fitalloc — see README.md.
#   make                 build ./allocator.so (release)
#   make test            every test; make test run=4 / run='4 8 12' for numbered cases
CARGO ?= cargo

.PHONY: all test clean FORCE

all: allocator.so

allocator.so: FORCE
	$(CARGO) build --release -p fitalloc-preload
	cp target/release/libfitalloc_preload.so $@

test: allocator.so
	@./tests/run.sh $(run)

clean:
	$(CARGO) clean
	rm -f allocator.so
	rm -rf tests/build
