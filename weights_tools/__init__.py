"""Tools around minigen's weights: convert Hugging Face GPT-2 checkpoints, and verify the result."""
