#!/usr/bin/env python3
"""Derives a multi-topic retrieval set from a single-topic BEIR set.

Every document of the new set is three documents of the source set, shuffled
with a fixed seed and joined in that order (each one's title, a blank line,
its text; the parts separated by blank lines), under the first part's title.
The queries are the source's; a query's relevant document is the one that
holds its source document. Long documents on several subjects, each subject
asked about: what a document-level signal (a document's lead, a whole-document
vector) must not be trusted to speak for.

    python3 benches/eval/merge_set.py benches/eval/manpages /tmp/manpages-merged
"""

import argparse
import json
import os
import random
import shutil


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a BEIR-format set (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    parser.add_argument("out", help="where to write the merged set")
    parser.add_argument("--per", type=int, default=3, help="source documents per merged document")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    with open(os.path.join(args.source, "corpus.jsonl"), encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()]
    random.Random(args.seed).shuffle(docs)
    os.makedirs(os.path.join(args.out, "qrels"), exist_ok=True)
    owner = {}
    with open(os.path.join(args.out, "corpus.jsonl"), "w", encoding="utf-8") as out:
        for i in range(0, len(docs), args.per):
            group = docs[i : i + args.per]
            doc_id = f"m{i // args.per}"
            text = "\n\n".join(f"{d['title']}\n\n{d['text']}" for d in group)
            out.write(json.dumps({"_id": doc_id, "title": group[0]["title"], "text": text}) + "\n")
            for d in group:
                owner[d["_id"]] = doc_id
    shutil.copy(os.path.join(args.source, "queries.jsonl"), os.path.join(args.out, "queries.jsonl"))
    with open(os.path.join(args.source, "qrels", "test.tsv"), encoding="utf-8") as f:
        header, *lines = f.read().splitlines()
    with open(os.path.join(args.out, "qrels", "test.tsv"), "w", encoding="utf-8") as out:
        out.write(header + "\n")
        for line in lines:
            query, doc, score = line.split("\t")
            out.write(f"{query}\t{owner[doc]}\t{score}\n")
    print(f"{len(docs)} documents merged into {len(range(0, len(docs), args.per))}, {len(lines)} judgements")


if __name__ == "__main__":
    main()
