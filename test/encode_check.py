"""tokenizer_encode (common/tokenizer.h, via build/tok_tool encode) against the sentencepiece
library: the same ids for every test string, and for every line of a text file when given.

    encode_check.py MODEL TOK_TOOL [TEXT_FILE]

The strings avoid what SentencePiece's NFKC table would change (full-width forms, ligatures,
'…' -> '...'): our encoder does not normalize (see tokenizer.h).
"""
import subprocess, sys
import sentencepiece as spm

STRINGS = [
    "Hello world", "Hello  world,   said the  dog.", "  leading and trailing  ", "", " ", "a",
    "The quick brown fox jumps over the lazy dog. 0123456789 + 2 = 3?!",
    "café, naïve, Zürich, São Paulo", "日本語のテキスト", "emoji 🙂🚀 mixed", "x\u00e9\u00e9\u00e9y",
    "line one\nline two", "tabs?no; quotes \"'` <tags> & {braces} [x] (y) #1 @me 50% $3 ~/^|\\",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "a<sep>b ☃☃ snow<sep> <ctl>", "ing ing ing the the the of of",
    "Ω≈ç√∫≤≥÷ — “smart quotes”", "tab\tand\r\nCRLF\n\n  end",
]


def main():
    model, tool = sys.argv[1], sys.argv[2]
    sp = spm.SentencePieceProcessor(model_file=model)
    texts = list(STRINGS)
    if len(sys.argv) > 3:
        texts += [l for l in open(sys.argv[3], encoding="utf-8").read().split("\n") if l.strip()][:300]
    bad = 0
    for t in texts:
        want = sp.encode(t)
        got = subprocess.run([tool, "encode", model], input=t.encode(), capture_output=True, check=True).stdout.split()
        got = [int(x) for x in got]
        if got != want:
            bad += 1
            if bad <= 5:
                print(f"MISMATCH {t!r}\n  ours {got}\n  spm  {want}")
    print(f"{len(texts) - bad}/{len(texts)} strings encode as sentencepiece does")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
