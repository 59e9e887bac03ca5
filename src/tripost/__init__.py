"""TriPosT (arXiv 2310.13522; official code jasonyux/TriPosT): the model learns to fix its own mistakes.

- src.tripost.feedback: step, feedback and trajectory text formats (official sentences)
- src.tripost.verify / improve: process and teacher verifiers; scripted and teacher improvers
- src.tripost.edit: the improvement loop behind edit_trajectories.py (resumable windows)
- src.tripost.data: one-step examples, rebalancing (generate_train_data.py --format tripost), weighted SL
- src.tripost.infer: eval.py --self_improve_rounds
"""
