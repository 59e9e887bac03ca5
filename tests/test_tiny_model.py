"""The tiny model loads in transformers and generates with real vLLM."""

from vllm import SamplingParams


def test_tokenizer_splits_digits_and_model_is_untied(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert [t for t in tok.tokenize("Mia has 127") if t.isdigit()] == ["1", "2", "7"]
    assert "Ġ127" not in tok.tokenize("Mia has 127") and "12" not in tok.tokenize("Mia has 127")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.hidden_size // model.config.num_attention_heads >= 32  # vLLM CPU attention
    assert not model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


def test_vllm_generates(llm):
    outs = llm.generate(["Mia has 7 apples."] * 4, SamplingParams(n=2, temperature=1.0, max_tokens=16, seed=0))
    assert len(outs) == 4 and all(len(o.outputs) == 2 for o in outs)
    assert all(len(c.token_ids) > 0 for o in outs for c in o.outputs)
    greedy = llm.generate(["Mia has 7 apples."], SamplingParams(temperature=0, max_tokens=16))
    again = llm.generate(["Mia has 7 apples."], SamplingParams(temperature=0, max_tokens=16))
    assert greedy[0].outputs[0].text == again[0].outputs[0].text
