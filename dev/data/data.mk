# data.mk: `make data` puts training data where train_gpt looks by default (dev/data/README.md).
# Included by the Makefile; also works alone: make -f dev/data/data.mk data
#
#   make data                    FineWeb (parameter-golf export): val + TRAIN_SHARDS train shards
#                                when huggingface.co answers, else the offline stand-in (NOT FineWeb)
#   make data TRAIN_SHARDS=80    what the record runs train on (~16 GB)
#   make data-fineweb            FineWeb only (fails when offline)
#   make data-offline            the offline stand-in only: the King James Bible from a Debian package
#
# FINEWEB_BASE_URL (environment) points the download at a mirror.

PYTHON ?= /usr/bin/python3
TRAIN_SHARDS ?= 1

.PHONY: data data-fineweb data-offline
# fineweb.py exits with 3 when the server cannot be reached at all: then (and only then) build the
# stand-in. It exits 0 without the network when everything asked for is already here.
data:
	@$(PYTHON) dev/data/fineweb.py --train-shards $(TRAIN_SHARDS); rc=$$?; \
	if [ $$rc -eq 3 ]; then \
	    echo "notice: huggingface.co cannot be reached, so building the offline stand-in dataset instead (NOT FineWeb)"; \
	    $(PYTHON) dev/data/offline_data.py; \
	else exit $$rc; fi
data-fineweb:
	$(PYTHON) dev/data/fineweb.py --train-shards $(TRAIN_SHARDS)
data-offline:
	$(PYTHON) dev/data/offline_data.py
